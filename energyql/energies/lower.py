"""Lowering: a checked stage of the energy graph -> a PyTorch energy module over images."""

from __future__ import annotations

import torch
from torch import nn

from energyql.catalog import CATALOGS, Catalog
from energyql.energies.base import EnergyTerm, Features
from energyql.energies.clip import ClipEnergy
from energyql.energies.combinators import ScaledEnergy, SoftOrEnergy, SumEnergy
from energyql.energies.conditional import ContextParam, KeepEnergy, PoseEnergy
from energyql.energies.constraint import ConstraintEnergy
from energyql.energies.predicate import (
    PredicateEnergy,
    and_log_prob,
    not_log_prob,
    or_log_prob,
    predicate_log_prob,
)
from energyql.errors import EnergyQLError
from energyql.lang import graph as g


class ControlModels:
    """Loads a world's control models on first use and keeps them for every stage.

    Arguments:
        catalog: the world's catalog.
        device: where the models run.
        clip_copies: augmented copies per image for CLIP energies.
        attributes: an attribute model to use instead of the world's own.
    """

    def __init__(self, catalog: Catalog | str, *, device: str = "cpu", clip_copies: int = 8,
                 attributes: nn.Module | None = None):
        self.catalog = CATALOGS[catalog] if isinstance(catalog, str) else catalog
        self.device = device
        self.clip_copies = clip_copies
        self._attributes = attributes
        self._poses: dict[str, nn.Module] = {}

    def pose(self, control):
        """The pose model that reads a catalog control's parameters from images (loaded once)."""
        if control.model not in self._poses:
            self._poses[control.model] = self._load_pose(control)
        return self._poses[control.model]

    def _load_pose(self, control):
        if control.model == "shapes-pose":
            from energyql.worlds.shapes import pose

            return pose.load(device=self.device)
        if control.model == "face-pose":
            from energyql.controls.face_pose import load_face_pose

            return load_face_pose(device=self.device)
        raise EnergyQLError(
            f"no pose model is available for '{control.name}' in the {self.catalog.name} world",
            hint=f"'{control.model}' is not a known pose model; pose models exist for "
                 "'shapes-pose' (shapes) and 'face-pose' (faces)")

    def identity(self, what: str):
        """The embedding that ``keep(what)`` holds fixed."""
        model = self.catalog.keepable(what)
        if model == "shapes-identity":
            from energyql.worlds.shapes import pose

            return pose.load_identity(device=self.device)
        if model == "facenet":
            from energyql.controls.faces import FaceEmbedder, load_facenet

            return FaceEmbedder(load_facenet(device=self.device)).to(self.device)
        raise EnergyQLError(f"nothing backs keep({what}) in the {self.catalog.name} world")

    @property
    def attributes(self):
        if self._attributes is None:
            from energyql.controls.attributes import load_attribute_model

            self._attributes = load_attribute_model(self.catalog, device=self.device)
        return self._attributes

    def clip(self, spec: str | None):
        """The CLIP a term names, or the world's default (``ENERGYQL_CLIP`` overrides it)."""
        from energyql.controls.clip import default_clip_spec, load_clip

        return load_clip(spec or default_clip_spec(self.catalog), self.device)


def is_probability(node) -> bool:
    """Whether a node denotes a probability (predicates and their not/and/or)."""
    if isinstance(node, (g.Predicate, g.Not)):
        return True
    if isinstance(node, (g.And, g.Or)):
        return all(is_probability(t) for t in node.terms)
    return False


def _log_prob(node, catalog: Catalog):
    if isinstance(node, g.Predicate):
        return predicate_log_prob(node.attr, catalog.attribute(node.attr).values.index(node.value))
    if isinstance(node, g.Not):
        return not_log_prob(_log_prob(node.term, catalog))
    parts = [_log_prob(t, catalog) for t in node.terms]
    return and_log_prob(parts) if isinstance(node, g.And) else or_log_prob(parts)


def lower_term(node, models: ControlModels) -> EnergyTerm:
    """Return the energy module for one pointwise graph node."""
    text = str(node)
    if is_probability(node):
        return PredicateEnergy(_log_prob(node, models.catalog), text)
    if isinstance(node, g.Clip):
        return ClipEnergy(models.clip(node.model), node.text,
                          copies=node.augment if node.augment is not None else models.clip_copies,
                          source=text)
    if isinstance(node, g.Scale):
        return ScaledEnergy(float(node.weight), lower_term(node.term, models), text)
    if isinstance(node, g.And):
        return SumEnergy([lower_term(t, models) for t in node.terms], text)
    if isinstance(node, g.Or):
        return SoftOrEnergy([lower_term(t, models) for t in node.terms], text)
    raise EnergyQLError(f"cannot lower '{text}' to an energy")


class StageEnergy(nn.Module):
    """The energy of one stage: pointwise terms plus constraint terms ``-λ·φ``.

    ``forward`` returns ``(total, parts)`` where ``parts`` maps each top-level term's text
    to its per-image energy, so progress bars and NaN guards can name the culprit.
    """

    def __init__(self, pointwise: list[EnergyTerm], constraints: list[ConstraintEnergy],
                 attributes=None, context: list[ContextParam] | None = None,
                 paired: bool = False):
        super().__init__()
        self.pointwise = nn.ModuleList(pointwise)
        self.constraints = nn.ModuleList(constraints)
        self.attribute_model = attributes
        # Conditional stages: the flow's context entries, and whether a term compares each
        # sample with the same noise at another context.
        self.context = list(context or [])
        self.paired = paired

    def features(self, images: torch.Tensor, generator: torch.Generator | None = None, *,
                 context: torch.Tensor | None = None,
                 reference_images: torch.Tensor | None = None) -> Features:
        return Features(images, self.attribute_model, generator, context=context,
                        reference_images=reference_images)

    @property
    def is_conditional(self) -> bool:
        return bool(self.context)

    def parts(self, features: Features) -> dict[str, torch.Tensor]:
        """Each term's per-image energy, keyed by its text (repeated texts get ``#2``, ...)."""
        parts: dict[str, torch.Tensor] = {}
        for term in [*self.pointwise, *self.constraints]:
            key, n = term.text, 1
            while key in parts:
                n += 1
                key = f"{term.text}#{n}"
            parts[key] = term(features)
        return parts

    def pointwise_energy(self, features: Features) -> torch.Tensor:
        if not len(self.pointwise):
            return torch.zeros(features.images.shape[0], device=features.images.device)
        return torch.stack([t(features) for t in self.pointwise]).sum(0)

    def phi(self, features: Features) -> torch.Tensor:
        """Concatenated φ of every constraint, ``(B, ΣK)``."""
        return torch.cat([c.phi(features) for c in self.constraints], dim=1)

    @property
    def has_constraints(self) -> bool:
        return len(self.constraints) > 0

    def total_and_parts(self, features: Features) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the per-image energy (the sum of every term) and each term's part."""
        parts = self.parts(features)
        return torch.stack(list(parts.values())).sum(0), parts

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None, *,
                context: torch.Tensor | None = None,
                reference_images: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return ``(total, parts)`` of images (the path training takes, see StageObjective)."""
        return self.total_and_parts(self.features(images, generator, context=context,
                                                  reference_images=reference_images))


def lower_stage(stage, models: ControlModels) -> StageEnergy:
    """Return the StageEnergy for a checked ``graph.Stage``."""
    pointwise, constraints, context = [], [], []
    for term in stage.terms:
        if isinstance(term, g.Constraint):
            constraints.append(ConstraintEnergy(term.kind, tuple(term.attrs),
                                                tuple(term.target), str(term)))
        elif isinstance(term, g.Control):
            control = models.catalog.control(term.name)
            params = [ContextParam(term.name, p.name, p.low, p.high) for p in term.params]
            columns = list(range(len(context), len(context) + len(params)))
            context.extend(params)
            pointwise.append(PoseEnergy(models.pose(control), params, columns, str(term)))
        elif isinstance(term, g.Keep):
            pointwise.append(KeepEnergy(models.identity(term.what), str(term)))
        else:
            pointwise.append(lower_term(term, models))
    if constraints and context:
        raise EnergyQLError(
            f"'{stage}' mixes distributional constraints with a conditional control",
            hint="put the constraint in its own stage before the conditional one")
    needs_attributes = constraints or any(_mentions_attributes(t) for t in stage.terms)
    return StageEnergy(pointwise, constraints, models.attributes if needs_attributes else None,
                       context, paired=any(isinstance(t, g.Keep) for t in stage.terms))


def _mentions_attributes(node) -> bool:
    if isinstance(node, g.Predicate):
        return True
    for child in (getattr(node, "terms", None) or ()) + ((node.term,) if hasattr(node, "term") else ()):
        if _mentions_attributes(child):
            return True
    return False
