"""The explorer's web app: a Starlette app serving one HTML page and a small JSON API.

Every request body is JSON of at most :data:`MAX_BODY` bytes; every failure a user can cause
answers ``{"error": ..., "hint": ..., "caret": ...}`` with status 400 (the page shows it), and
anything else 500 with the error's kind, the traceback going to the server's log only. The
server keeps running either way. Run names are resolved by :class:`~energyql.app.runs.RunsDir`
(nothing outside RUNS_DIR is listed or read).
"""

from __future__ import annotations

import io
import json
import sys
import traceback
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from energyql.app.explorer import Explorer
from energyql.app.runs import RunsDir
from energyql.app.training import MAX_EXPRESSION, Trainings, trainable_generators
from energyql.errors import EnergyQLError, ExpressionError, UsageError, caret_excerpt

#: Largest request body (JSON) the server reads.
MAX_BODY = 64 << 10
#: Hosts the page answers to when bound to the loopback interface (refuses DNS rebinding).
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
#: The page's own files, served by name (nothing else from the package is).
STATIC = {"app.js": "text/javascript", "style.css": "text/css"}


class BodyTooLarge(UsageError):
    """The request body is larger than :data:`MAX_BODY`."""


def error_body(error: EnergyQLError) -> dict[str, Any]:
    """Return what the page shows of an error: message, hint, caret excerpt and span."""
    body: dict[str, Any] = {"error": error.message, "hint": error.hint or ""}
    if isinstance(error, ExpressionError) and error.source is not None \
            and error.span is not None:
        body["caret"] = caret_excerpt(error.source, error.span)
        body["span"] = [error.span.start, error.span.end]
    return body


async def read_json(request: Request) -> Any:
    """Return the request's JSON body (at most MAX_BODY bytes), else UsageError."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/json":
        # Also what keeps other sites' plain form posts out (they cannot send this type
        # without the browser asking first, and the server never says yes).
        raise UsageError("requests must be JSON (Content-Type: application/json)")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise BodyTooLarge(f"the request is {int(declared):,} bytes, more than {MAX_BODY:,}",
                           hint="shorten the expression")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise BodyTooLarge(f"the request is more than {MAX_BODY:,} bytes",
                               hint="shorten the expression")
    try:
        return json.loads(data.decode("utf-8")) if data else {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UsageError("the request is not JSON") from None
    except ValueError:  # an integer of more digits than Python converts (4,300)
        raise UsageError("the request holds a number too long to read",
                         hint="numbers have at most a few dozen digits") from None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UsageError("the request must be a JSON object")
    return body


Handler = Callable[[Request], Awaitable[Any]]


def api(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Wrap an API handler: JSON out, user errors as 400, anything else as a logged 500."""

    async def endpoint(request: Request) -> Response:
        try:
            result = await handler(request)
        except BodyTooLarge as error:
            return JSONResponse(error_body(error), status_code=413)
        except EnergyQLError as error:
            return JSONResponse(error_body(error), status_code=400)
        except Exception as error:  # the server survives; the page gets a message
            traceback.print_exception(error, file=sys.stderr)
            return JSONResponse({"error": f"internal error ({type(error).__name__}); the "
                                          "server's log has the details", "hint": ""},
                                status_code=500)
        if isinstance(result, Response):
            return result
        return JSONResponse(result)

    return endpoint


def check_expression(expr: Any, gen: Any) -> dict[str, Any]:
    """Return ``energyql check``'s answer for the page: canonical text and the graph in words."""
    from rich.console import Console

    from energyql.lang.api import compile as compile_program
    from energyql.presets import expand

    if not isinstance(expr, str):
        raise UsageError("the expression must be text")
    if len(expr) > MAX_EXPRESSION:
        raise UsageError(f"the expression is {len(expr):,} characters long, more than "
                         f"{MAX_EXPRESSION:,}", hint="shorten it, or use energyql check")
    if gen is not None and not isinstance(gen, str):
        raise UsageError("the generator must be a name")
    if not expr.strip():
        return {"ok": False, "error": "", "hint": "write an expression, e.g. color == red"}
    expr, gen = expand(expr, gen or None)
    program = compile_program(expr, gen=gen or None)
    text = io.StringIO()
    Console(file=text, width=100, color_system=None, highlight=False,
            soft_wrap=True).print(program.tree())
    return {"ok": True, "canonical": str(program), "tree": text.getvalue(),
            "stages": len(program.stages), "generator": gen,
            "conditional": any(stage.controls for stage in program.stages)}


def create_app(runs_dir: str, *, host: str = "127.0.0.1", device: str = "cpu",
               threads: int | None = None, train: Callable[..., Any] | None = None) -> Starlette:
    """Return the explorer app over ``runs_dir``.

    Arguments:
        runs_dir: the folder whose runs are listed (and where the page writes new ones).
        host: the interface it will be bound to; on the loopback interface only requests
            naming a loopback host are answered.
        device: where runs are sampled and trained.
        threads: torch CPU threads for trainings started from the page.
        train: the training entry point (default :func:`energyql.train`).
    """
    runs = RunsDir(runs_dir)
    explorer = Explorer(runs, device=device)
    trainings = Trainings(runs, train=train, threads=threads)

    async def page(request: Request) -> Response:
        return Response(_static("index.html"), media_type="text/html",
                        headers={"Cache-Control": "no-store"})

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return Response("not found", status_code=404, media_type="text/plain")
        return Response(_static(name), media_type=STATIC[name])

    async def meta(request: Request) -> Any:
        from energyql import __version__
        from energyql.generators.registry import names

        return {"version": __version__, "generators": names(),
                "trainable": trainable_generators(), "runs_dir": str(runs.root)}

    async def check(request: Request) -> Any:
        body = _object(await read_json(request))
        try:
            return await run_in_threadpool(check_expression, body.get("expr"), body.get("gen"))
        except ExpressionError as error:
            return {"ok": False, **error_body(error)}

    async def list_runs(request: Request) -> Any:
        return {"runs": [entry.to_dict() for entry in await run_in_threadpool(runs.list)]}

    async def info(request: Request) -> Any:
        body = _object(await read_json(request))
        return await run_in_threadpool(explorer.info, body.get("name"))

    async def draw(request: Request) -> Any:
        body = _object(await read_json(request))
        drawing = await run_in_threadpool(
            lambda: explorer.draw(body.get("name"), seed=body.get("seed", 0),
                                  sampler=body.get("sampler", "flow"),
                                  context=body.get("context")))
        return drawing.to_dict()

    async def compare(request: Request) -> Any:
        body = _object(await read_json(request))
        return await run_in_threadpool(
            lambda: explorer.compare(body.get("name"), seed=body.get("seed", 0),
                                     stage=body.get("stage", 1), context=body.get("context")))

    async def grid_png(request: Request) -> Any:
        query = request.query_params
        try:
            context = json.loads(query.get("context") or "{}")
        except json.JSONDecodeError:
            raise UsageError("context must be a JSON object") from None
        name = query.get("name")
        drawing = await run_in_threadpool(
            lambda: explorer.draw(name, seed=query.get("seed", "0"),
                                  sampler=query.get("sampler", "flow"), context=context,
                                  judge=False))
        filename = f"{str(name).replace('/', '-')}-seed{query.get('seed', '0')}.png"
        return Response(drawing.png, media_type="image/png", headers={
            "Content-Disposition": f'attachment; filename="{_safe_filename(filename)}"'})

    async def report(request: Request) -> Any:
        name, kind = request.query_params.get("name"), request.query_params.get("kind", "html")
        path = await run_in_threadpool(explorer.report, name, kind)
        # A download, never shown on the page's own origin.
        return FileResponse(path, filename=_safe_filename(
            f"{str(name).replace('/', '-')}-{path.name}"),
            media_type="text/html" if kind == "html" else "text/markdown",
            content_disposition_type="attachment")

    async def train_start(request: Request) -> Any:
        body = _object(await read_json(request))
        return await run_in_threadpool(trainings.start, body)

    async def train_status(request: Request) -> Any:
        return trainings.status()

    async def train_cancel(request: Request) -> Any:
        return trainings.cancel()

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/meta", api(meta)),
        Route("/api/check", api(check), methods=["POST"]),
        Route("/api/runs", api(list_runs)),
        Route("/api/run/info", api(info), methods=["POST"]),
        Route("/api/run/draw", api(draw), methods=["POST"]),
        Route("/api/run/compare", api(compare), methods=["POST"]),
        Route("/api/run/grid.png", api(grid_png)),
        Route("/api/run/report", api(report)),
        Route("/api/train", api(train_start), methods=["POST"]),
        Route("/api/train/status", api(train_status)),
        Route("/api/train/cancel", api(train_cancel), methods=["POST"]),
    ]
    allowed = list(LOOPBACK) if is_loopback(host) else ["*"]
    app = Starlette(routes=routes,
                    middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed)])
    app.state.explorer = explorer
    app.state.trainings = trainings
    return app


def is_loopback(host: str) -> bool:
    """True for a host name or address that only this machine can reach."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _safe_filename(name: str) -> str:
    # ASCII only: a header is latin-1, and str.isalnum() passes every script's letters.
    return "".join(c if (c.isascii() and c.isalnum()) or c in "._-+" else "_"
                   for c in name)[:120] or "download"


def _static(name: str) -> bytes:
    return resources.files("energyql.app").joinpath("static").joinpath(name).read_bytes()


__all__ = ["LOOPBACK", "MAX_BODY", "check_expression", "create_app", "error_body",
           "is_loopback"]
