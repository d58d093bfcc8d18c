"""``energyql presets [--json]``: PromptGen's experiments as named programs (``@name``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from energyql.cli.app import app, guarded, stdout


@app.command("presets")
@guarded
def presets_command(
    as_json: Annotated[bool, typer.Option("--json", help="Print the presets as JSON.")] = False,
) -> None:
    """List the paper's experiments; run one with `energyql run @NAME`."""
    from rich.markup import escape
    from rich.table import Table

    from energyql.presets import PRESETS

    if as_json:
        typer.echo(json.dumps([preset.to_dict() for preset in PRESETS], indent=2))
        return
    # One table per experiment group: the group's long title would crowd a column.
    groups: dict[str, list] = {}
    for preset in PRESETS:
        groups.setdefault(preset.experiment, []).append(preset)
    for experiment, members in groups.items():
        table = Table(title=experiment, title_justify="left")
        for column in ("name", "generator", "expression"):
            table.add_column(column, no_wrap=column != "expression")
        for preset in members:
            # A preset's generator options (a text-to-image prompt) belong with its generator.
            gen = preset.gen + "".join(f" {k}={v!r}" for k, v in preset.gen_options)
            table.add_row("@" + preset.name, escape(gen), preset.expression)
        stdout.print(table)
    stdout.print("run one with `energyql run @NAME`; check it with `energyql check @NAME`; "
                 "sources and notes: `energyql presets --json`")
