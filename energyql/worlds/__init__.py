"""Embedded worlds: one registered :class:`World` record each, and weight-file helpers.

A world is a procedural domain with its own trained models, living in one folder
``energyql/worlds/<name>/`` (or any importable package of a user's). Its package registers one
:class:`World` record with :func:`register_world`: its catalog, its generators' registry specs,
the control models its catalog names, the feature extractor of its Fréchet distance and the
weight files it needs. The central tables (catalogs, the generator and control-model
registries, Fréchet features, ``energyql gens``) read the registered worlds, so nothing
central names a world. The package's own world modules are found by :func:`discover` (every
sub-package of this one) the first time a table is read. Registering imports no torch.

The helpers here are shared by every loader of safetensors weights: reading a state dict with
its metadata, writing one atomically, and the sha256 digest that artifacts record.

Example:
    >>> register_world(World(catalog=CATALOG, package=__name__,          # doctest: +SKIP
    ...                      generators=(GeneratorSpec("toy", "toy", f"{__name__}.gen:load"),),
    ...                      controls=(model("toy-judge", f"{__name__}.judge:load",
    ...                                      kind="attributes"),),
    ...                      features=f"{__name__}.judge:features", weights=("judge.safetensors",)))
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from energyql.errors import EnergyQLError, WeightsMissingError
from energyql.io import save_tensors, sha256_file

if TYPE_CHECKING:
    from energyql.catalog import Catalog
    from energyql.controls.registry import ControlModelSpec
    from energyql.generators.registry import GeneratorSpec

__all__ = ["World", "discover", "read_safetensors", "register_world", "registered", "sha256_file",
           "world_of_generator", "write_safetensors"]


@dataclass(frozen=True)
class World:
    """Everything the central tables need to know about one embedded world.

    Arguments:
        catalog: what expressions may name; its name is the world's name.
        package: the importable package the world lives in (its weights are in
            ``<package>/weights/``), usually ``__name__`` of the module that registers it.
        generators: registry specs of its generators (each with ``catalog`` = the world's name).
        controls: the control models its catalog names (attribute judge, pose, identity, small
            CLIP), as :func:`energyql.controls.registry.model` specs.
        features: ``"module:function"`` returning ``(N, D)`` features of images in [0, 1], for
            Fréchet distances (:func:`energyql.frechet.world_frechet`); None: no such distance.
        weights: the files of ``<package>/weights/`` the world needs before it can train
            (``energyql gens`` reports them); empty when it needs none.
        description: one line for listings.
    """

    catalog: Catalog
    package: str
    generators: tuple[GeneratorSpec, ...] = ()
    controls: tuple[ControlModelSpec, ...] = ()
    features: str | None = None
    weights: tuple[str, ...] = ()
    description: str = ""

    @property
    def name(self) -> str:
        return self.catalog.name

    @property
    def weights_folder(self) -> Path:
        """``<package>/weights/`` (found without importing the package's modules)."""
        spec = importlib.util.find_spec(self.package)
        locations = list(spec.submodule_search_locations or ()) if spec is not None else []
        if not locations:
            raise EnergyQLError(f"world '{self.name}': package '{self.package}' is not an "
                                "importable package", hint="give its package's __name__")
        return Path(locations[0]) / "weights"

    def missing_weights(self) -> list[str]:
        """Return the needed weight files that are not in :attr:`weights_folder`."""
        folder = self.weights_folder if self.weights else Path()
        return [name for name in self.weights if not (folder / name).is_file()]

    def feature_function(self) -> Callable[..., Any]:
        """Import and return the Fréchet feature function (imports torch)."""
        if self.features is None:
            raise EnergyQLError(f"world '{self.name}' has no feature model")
        module, _, function = self.features.partition(":")
        return getattr(importlib.import_module(module), function)


_WORLDS: dict[str, World] = {}
_discovered = False


def register_world(world: World) -> World:
    """Add (or replace) a world; return it. Checked here, so a broken record fails at import.

    Raises:
        EnergyQLError: its name is a built-in catalog's, a generator spec names another
            catalog, or its catalog names a control model that neither the world nor the
            control-model registry has (with the kind the catalog needs).
    """
    from energyql.catalog import BUILTIN_CATALOGS
    from energyql.controls import registry as controls

    name = world.name
    if name in BUILTIN_CATALOGS:
        raise EnergyQLError(f"world '{name}' has the name of a built-in catalog",
                            hint="built-in catalogs: " + ", ".join(BUILTIN_CATALOGS))
    for spec in world.generators:
        if spec.catalog != name:
            raise EnergyQLError(f"world '{name}': generator '{spec.name}' names catalog "
                                f"'{spec.catalog}'", hint=f"its catalog is '{name}'")
    own = {spec.key: spec.kind for spec in world.controls}
    for key, kind in _models_named(world.catalog):
        if own.get(key) != kind and not controls.is_registered(key, kind=kind):
            raise EnergyQLError(f"world '{name}': its catalog names the {kind} model '{key}', "
                                "which is not registered",
                                hint=f"add controls.registry.model('{key}', 'module:function', "
                                     f"kind='{kind}') to the world's controls")
    _WORLDS[name] = world
    return world


def _models_named(catalog: Catalog) -> list[tuple[str, str]]:
    """The (key, kind) of every control model a catalog names."""
    named = [(a.model, "attributes") for a in catalog.attributes]
    named += [(c.model, "pose") for c in catalog.controls]
    named += [(key, "identity") for _, key in catalog.keepables]
    if catalog.clip_model:
        named.append((catalog.clip_model, "clip"))
    return named


def discover() -> None:
    """Import every world package of :mod:`energyql.worlds` once (each registers itself)."""
    global _discovered
    if _discovered:
        return
    _discovered = True  # first, so that a world reading a table while it loads does not recurse
    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        if info.ispkg:
            importlib.import_module(info.name)


def registered() -> dict[str, World]:
    """Return every registered world by name (the package's own are discovered first)."""
    discover()
    return dict(_WORLDS)


def world_of_generator(name: str) -> World | None:
    """Return the world whose record lists the generator ``name``, else None."""
    return next((w for w in registered().values() if any(g.name == name for g in w.generators)),
                None)


def read_safetensors(path: str | os.PathLike, device: str = "cpu"):
    """Return ``(state_dict, metadata)`` from a safetensors file.

    ``metadata`` is the file's string metadata, with values that hold JSON decoded.

    Raises:
        WeightsMissingError: the file does not exist.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsMissingError(
            f"weights file '{path}' is missing",
            hint="reinstall energyql, or retrain with `python -m energyql.worlds.shapes.train`",
        )
    tensors = {}
    with safe_open(str(path), framework="pt", device=str(device)) as handle:
        raw = handle.metadata() or {}
        names = handle.keys()  # a safe_open handle is not iterable itself
        for key in names:
            tensors[key] = handle.get_tensor(key)
    metadata = {}
    for key, value in raw.items():
        try:
            metadata[key] = json.loads(value)
        except ValueError:
            metadata[key] = value
    return tensors, metadata


def write_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict | None = None) -> str:
    """Write ``tensors`` to ``path`` atomically (temp file, then rename); return its sha256.

    Non-string metadata values are stored as JSON.
    """
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    save_tensors(path, tensors, metadata=meta)
    return sha256_file(path)
