"""``energyql check EXPR [--gen NAME] [--json]``: parse and check an expression, print its graph.

Needs only the catalog, never weights or torch, so it answers instantly.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from energyql.cli.app import app, guarded, stdout


@app.command("check")
@guarded
def check(
    expr: Annotated[str, typer.Argument(
        help="The expression, e.g. 'clip(\"a face\") & uniform(race)', or @PRESET.")],
    gen: Annotated[Optional[str], typer.Option(
        "--gen", "-g", help="Generator whose catalog checks the names (e.g. stylegan2-ffhq, "
        "shapes). Without it only syntax and composition are checked.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the graph as JSON.")] = False,
) -> None:
    """Check an expression and print its stages, terms and the models behind them."""
    from energyql.lang.api import compile
    from energyql.presets import expand

    expr, gen = expand(expr, gen)  # '@name': a paper preset and its generator
    program = compile(expr, gen=gen)
    if as_json:
        from energyql.io import dumps_strict

        typer.echo(dumps_strict(program.to_dict(), what="the checked program"))
    else:
        stdout.print(program.tree())
