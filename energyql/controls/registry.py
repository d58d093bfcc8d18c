"""The control-model registry: the keys a catalog names map to ``"module:function"`` loaders.

A catalog names each control model by a key (an attribute's ``model``, a control's ``model``,
a keepable's model, its ``clip_model``); this registry says how to load it. It holds the models
registered here with :func:`register` and reads those of every registered world (the
``controls`` of its :class:`~energyql.worlds.World` record), so no code here names a world; an
entry registered here wins over a world's of the same key. It is plain data and imports no
torch until a loader runs.

Each kind of model has one calling convention:

- ``attributes``: ``load(catalog, device=...)`` returns a module mapping images in [0, 1] to
  ``{attribute: log-probabilities (B, K)}`` in catalog value order.
- ``pose``: ``load(device=...)`` returns a module mapping images to ``{parameter: (B,)}``.
- ``identity``: ``load(device=...)`` returns a module mapping images to embeddings ``(B, D)``.
- ``clip``: ``load(device=...)`` returns a :class:`~energyql.controls.clip.ClipModel`.

Example:
    >>> register("my-pose", "mypackage.pose:load", kind="pose")   # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any

from energyql.errors import EnergyQLError, check_choice

KINDS = ("attributes", "pose", "identity", "clip")


@dataclass(frozen=True)
class ControlModelSpec:
    """How to load one named control model.

    Arguments:
        key: the name catalogs use, e.g. ``"shapes-pose"``.
        kind: one of :data:`KINDS`; it fixes the loader's calling convention.
        loader: ``"module:function"``.
        description: one line for listings.
    """

    key: str
    kind: str
    loader: str
    description: str = ""

    def function(self) -> Any:
        """Import and return the loader (imports torch)."""
        module_name, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module_name), function)

    def load(self, *args: Any, **options: Any) -> Any:
        """Import the loader and call it (imports torch)."""
        return self.function()(*args, **options)

    def accepts(self, option: str) -> bool:
        """Whether the loader takes keyword ``option`` (or any keyword)."""
        parameters = inspect.signature(self.function()).parameters
        return option in parameters or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())


_REGISTRY: dict[str, ControlModelSpec] = {}


def model(key: str, loader: str, *, kind: str, description: str = "") -> ControlModelSpec:
    """Return the checked spec of a control model (a world's ``controls`` lists these)."""
    check_choice(kind, KINDS, what="control model kind", error=EnergyQLError)
    module_name, sep, function = loader.partition(":")
    if not (module_name and sep and function):
        raise EnergyQLError(f"control model loader '{loader}' is not 'module:function'",
                            hint="e.g. 'mypackage.pose:load'")
    return ControlModelSpec(key, kind, loader, description)


def register(key: str, loader: str, *, kind: str, description: str = "") -> ControlModelSpec:
    """Add (or replace) the loader of a control model; return its spec."""
    spec = model(key, loader, kind=kind, description=description)
    _REGISTRY[key] = spec
    return spec


def _table() -> dict[str, ControlModelSpec]:
    """Every known spec: the registered worlds' models, then (winning) those registered here."""
    from energyql.worlds import registered

    table = {spec.key: spec for world in registered().values() for spec in world.controls}
    table.update(_REGISTRY)
    return table


def names(kind: str | None = None) -> list[str]:
    """Return the registered keys (of one kind, if given)."""
    return sorted(k for k, s in _table().items() if kind is None or s.kind == kind)


def is_registered(key: str, *, kind: str | None = None) -> bool:
    spec = _table().get(key)
    return spec is not None and (kind is None or spec.kind == kind)


def resolve(key: str, *, kind: str) -> ControlModelSpec:
    """Return the spec of a key of the given kind; unknown keys fail with a did-you-mean."""
    check_choice(key, names(kind), what=f"{kind} model" if kind != "clip" else "CLIP model",
                 error=EnergyQLError)
    return _table()[key]


def load(key: str, *args: Any, kind: str, **options: Any) -> Any:
    """Load the control model registered under ``key`` (see the module docstring)."""
    return resolve(key, kind=kind).load(*args, **options)


# --- the models of real-photograph catalogs (each world's own are in its World record) --------

register("face-attributes", "energyql.controls.attributes:load_face_attributes",
         kind="attributes",
         description="FairFace race/age/gender where its weights are present, else CLIP zero-shot")
register("celeba-attributes", "energyql.controls.celeba:load_celeba_attributes",
         kind="attributes", description="a CelebA-style binary attribute classifier (local file)")
register("clip-zero-shot", "energyql.controls.attributes:load_zero_shot_attributes",
         kind="attributes", description="CLIP zero-shot classification of every attribute")
register("face-pose", "energyql.controls.face_pose:load_face_pose", kind="pose",
         description="head yaw and pitch from MTCNN landmarks")
register("facenet", "energyql.controls.faces:load_facenet", kind="identity",
         description="FaceNet (InceptionResnetV1) face embeddings")
