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
    from rich.table import Table

    from energyql.presets import PRESETS

    if as_json:
        typer.echo(json.dumps([preset.to_dict() for preset in PRESETS], indent=2))
        return
    table = Table(title="presets (energyql run @NAME, energyql check @NAME)", title_justify="left")
    for column in ("name", "generator", "experiment", "expression"):
        table.add_column(column, no_wrap=column in ("name", "generator"))
    for preset in PRESETS:
        table.add_row("@" + preset.name, preset.gen, preset.experiment, preset.expression,
                      end_section=False)
    stdout.print(table)
