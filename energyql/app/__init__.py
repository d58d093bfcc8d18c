"""``energyql serve``: a local page to write expressions, train, and explore trained runs.

An optional extra (``pip install "energyql[app]"``): a small Starlette app served by uvicorn,
one HTML page with plain JavaScript, thin over the Python API as the CLI is
(:mod:`energyql.app.server`, :mod:`~energyql.app.explorer`, :mod:`~energyql.app.training`,
:mod:`~energyql.app.runs`). See docs/explorer.md.

    >>> from energyql.app import serve
    >>> serve("runs", port=8000)          # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from energyql.errors import UsageError

#: The command that installs what the page needs.
INSTALL = 'pip install "energyql[app]"'
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def require() -> None:
    """Raise UsageError naming the install command if the app's packages are missing."""
    from importlib.util import find_spec

    missing = [name for name in ("starlette", "uvicorn") if find_spec(name) is None]
    if missing:
        raise UsageError(f"energyql serve needs {' and '.join(missing)}, which are not "
                         "installed", hint=f"install the page's extra: {INSTALL}")


def create_app(runs_dir: str, **options: Any) -> Any:
    """Return the explorer's ASGI app over ``runs_dir`` (see :func:`server.create_app`)."""
    require()
    from energyql.app.server import create_app as create

    return create(runs_dir, **options)


def serve(runs_dir: str, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          **options: Any) -> None:
    """Serve the explorer page on ``host:port`` until interrupted."""
    require()
    import uvicorn

    app = create_app(runs_dir, host=host, **options)
    uvicorn.run(app, host=host, port=port, log_level="warning")


@dataclass
class Running:
    """A server started in a thread of this process (tests, benchmarks): stop() ends it."""

    url: str
    server: Any
    thread: threading.Thread
    app: Any

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def start_in_thread(runs_dir: str, *, host: str = DEFAULT_HOST, port: int = 0,
                    **options: Any) -> Running:
    """Start the explorer in a background thread on a free port; return where it listens."""
    require()
    import uvicorn

    app = create_app(runs_dir, host=host, **options)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                           lifespan="off"))
    thread = threading.Thread(target=server.run, name="energyql-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise UsageError(f"the explorer did not start on {host}:{port}")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    return Running(f"http://{host}:{bound}", server, thread, app)


__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "INSTALL", "Running", "create_app", "require",
           "serve", "start_in_thread"]
