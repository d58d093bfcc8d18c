"""The one way the end-to-end tests train: ``energyql run`` in process, one torch thread."""

import json

from typer.testing import CliRunner

from energyql.cli import app

runner = CliRunner()


def run_world(folder, world: str, expression: str, *extra: str):
    """Run ``expression`` on an embedded world into ``folder/run``; return (metrics, out)."""
    out = folder / "run"
    result = runner.invoke(app, ["run", expression, "--gen", world, "--out", str(out),
                                 "--no-progress", "--threads", "1", *extra])
    assert result.exit_code == 0, result.output
    return json.loads((out / "metrics.json").read_text()), out
