"""``energyql gens``: every registered generator, and whether its weights are ready."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from energyql.cli.app import app, guarded, stdout
from energyql.generators import hf_folders

# Loader module -> (the packages it imports, the extra that installs them).
_EXTRAS = {"energyql.generators.diffusion": (("diffusers",), "energyql[diffusion]"),
           "energyql.generators.text2image": (("diffusers", "transformers"), "energyql[diffusion]")}


def weight_keys(spec) -> list[str]:
    """Return the hub keys a spec needs: its weights and, where registered, their config."""
    from energyql import hub

    if spec.weights is None or spec.weights.startswith(hf_folders.PREFIX):
        return []
    return [k for k in (spec.weights, f"{spec.weights}-config") if k in hub.KNOWN]


def missing_extra(spec) -> str | None:
    """Return the pip extra a spec's loader needs when it is not installed, else None."""
    from importlib.util import find_spec

    needed = _EXTRAS.get(spec.loader.partition(":")[0])
    if needed is None:
        return None
    packages, extra = needed
    return extra if any(find_spec(package) is None for package in packages) else None


def _with_extra(spec) -> str:
    from rich.markup import escape

    extra = missing_extra(spec)
    return spec.description + (f" [yellow]{escape(f'(pip install {extra!r})')}[/]" if extra else "")


def weights_status(spec) -> tuple[str, str]:
    """Return ``(status, where)`` for a spec: status is 'ready', 'missing' or 'local file'."""
    from energyql import hub

    if spec.weights is not None and spec.weights.startswith(hf_folders.PREFIX):
        where = str(hf_folders.location(spec.weights))
        return ("ready" if hf_folders.is_present(spec.weights) else "missing"), where
    if len(weight_keys(spec)) > 1:  # a state dict and its config, both needed
        present = all(hub.is_present(k) for k in weight_keys(spec))
        return ("ready" if present else "missing"), str(hub.location(spec.weights))
    if spec.weights is not None:
        if spec.weights not in hub.KNOWN:
            return "missing", f"(no hub entry '{spec.weights}')"
        where = str(hub.location(spec.weights))
        return ("ready" if hub.is_present(spec.weights) else "missing"), where
    if spec.path is not None:
        return ("ready" if Path(spec.path).expanduser().is_file() else "missing"), spec.path
    # An embedded world's weights ship in its package's weights/ folder (its World record).
    from energyql.worlds import world_of_generator

    world = world_of_generator(spec.name)
    if world is not None:
        return ("ready" if not world.missing_weights() else "missing"), str(world.weights_folder)
    return "built in", ""


_STYLES = {"ready": "green", "missing": "yellow", "built in": "green", "local file": "cyan"}


@app.command()
@guarded
def gens(
    paths: Annotated[bool, typer.Option(
        "--paths", help="List where each file is expected.")] = False,
    commands: Annotated[bool, typer.Option(
        "--commands", help="Print the command that fetches each missing file.")] = False,
) -> None:
    """List every registered generator and whether its weights are present."""
    from rich.table import Table

    from energyql import hub
    from energyql.generators import registry

    table = Table(title="generators", title_justify="left")
    for column in ("name", "catalog", "resolution", "weights", "description"):
        table.add_column(column, no_wrap=column != "description")
    missing, expected = [], []
    for spec in registry.specs():
        status, where = weights_status(spec)
        if status == "missing" and spec.weights is not None:
            missing += ([spec.weights] if spec.weights.startswith(hf_folders.PREFIX) else
                        [k for k in weight_keys(spec) if not hub.is_present(k)])
        row = [spec.name, spec.catalog, f"{spec.resolution}" if spec.resolution else "-",
               f"[{_STYLES[status]}]{status}[/]", _with_extra(spec)]
        table.add_row(*row)
        if where:
            expected.append((spec.name, where))
    for scheme, spec in registry.path_schemes().items():
        row = [f"{scheme}:PATH", spec.catalog, "from file", "[cyan]local file[/]",
               _with_extra(spec)]
        table.add_row(*row)
    stdout.print(table)
    if paths:
        # Plain lines, not a table column: a narrow terminal or a pipe would fold the paths.
        stdout.print("expected at:")
        width = max(len(name) for name, _ in expected)
        for name, where in expected:
            stdout.print(f"  {name:<{width}}  {where}", soft_wrap=True, markup=False,
                         highlight=False)
    # The path is the user's text (ENERGYQL_CACHE): never read as rich markup.
    stdout.print(f"weights cache: {hub.cache_dir()}  (set ENERGYQL_CACHE to move it)",
                 markup=False, highlight=False)
    if missing and commands:
        for key in missing:
            command = (hf_folders.fetch_command(key) if key.startswith(hf_folders.PREFIX)
                       else hub.fetch_command(key))
            stdout.print(command, soft_wrap=True, markup=False, highlight=False)
    elif missing:
        stdout.print("missing weights download on first use; offline, see "
                     "`energyql gens --commands`")
