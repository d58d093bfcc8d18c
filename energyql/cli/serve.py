"""``energyql serve [RUNS_DIR] [--port P] [--host H]``: the explorer page (docs/explorer.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from energyql.cli.app import (
    DeviceOption,
    ThreadsOption,
    app,
    guarded,
    in_range,
    stderr,
    stdout,
)
from energyql.errors import UsageError


@app.command()
@guarded
def serve(
    runs_dir: Annotated[Path, typer.Argument(
        help="Folder of runs to explore (created if absent); only runs inside it are shown, "
             "and runs trained on the page are written there.")] = Path("runs"),
    port: Annotated[int, typer.Option(help="Port to listen on (1 to 65535).",
                                      callback=in_range(1, 65535))] = 8000,
    host: Annotated[str, typer.Option(
        help="Interface to bind. The default, 127.0.0.1, lets only this machine in; any "
             "other host exposes the page (and training) to the network.")] = "127.0.0.1",
    device: DeviceOption = "cpu",
    threads: ThreadsOption = None,
) -> None:
    """Serve a local page to write and check expressions, train on the embedded worlds, and
    explore trained runs (grids, sliders, stages). Needs the app extra (docs/explorer.md)."""
    from energyql.app import require
    from energyql.app import serve as run_server
    from energyql.app.server import is_loopback

    require()
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UsageError(f"'{runs_dir}' is a file, not a folder of runs",
                         hint="give the folder your runs are in, e.g. energyql serve runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    if not is_loopback(host):
        stderr.print(f"warning: serving on {host}: anyone who can reach this machine on port "
                     f"{port} can read the runs in '{runs_dir}' and start trainings; there is "
                     "no login. Use the default --host 127.0.0.1 unless you mean it.",
                     style="bold yellow", markup=False)
    from energyql.cli.app import set_threads

    chosen = set_threads(threads)
    shown = f"[{host}]" if ":" in host else host
    stdout.print(f"energyql explorer on http://{shown}:{port}/ (runs in '{runs_dir}'); "
                 "Ctrl-C stops it", markup=False)
    run_server(str(runs_dir), host=host, port=port, device=device, threads=chosen)


__all__ = ["serve"]
