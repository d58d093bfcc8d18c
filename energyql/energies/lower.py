"""Lowering: a checked stage of the energy graph -> a PyTorch energy module over images.

Each pass over the term tree is a :class:`~energyql.lang.visit.TermVisitor`; control models are
loaded through :mod:`energyql.controls.registry` by the keys the world's catalog names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from energyql.catalog import CATALOGS, Catalog, ClipSettings
from energyql.controls import registry
from energyql.energies.base import EnergyTerm, Features
from energyql.energies.clip import ClipEnergy
from energyql.energies.combinators import ScaledEnergy, SoftOrEnergy, SumEnergy
from energyql.energies.conditional import ContextParam, KeepEnergy, PoseEnergy
from energyql.energies.constraint import ConstraintEnergy, ConstraintList
from energyql.energies.predicate import (
    LogProb,
    PredicateEnergy,
    and_log_prob,
    not_log_prob,
    or_log_prob,
    predicate_log_prob,
)
from energyql.energies.sliders import (
    MAX_GRID_SLIDERS,
    SLIDER,
    LambdaGrid,
    SliderScaledEnergy,
    slider_params,
)
from energyql.errors import EnergyQLError, check_choice
from energyql.lang import graph as g
from energyql.lang.graph import is_probability
from energyql.lang.visit import TermVisitor


class ControlModels:
    """Loads a world's control models on first use and keeps them for every stage.

    Which model backs what is catalog data: each key the catalog names is loaded through
    :mod:`energyql.controls.registry`.

    Arguments:
        catalog: the world's catalog (or its name).
        device: where the models run.
        clip_copies: augmented copies per image for CLIP energies (default: the world's).
        attributes: an attribute model to use instead of the world's own.
        clip_settings: CLIP energy settings to use instead of the world's (``catalog.clip``).
        clip: the CLIP spec behind ``clip(...)`` terms that name none and behind zero-shot
            attributes (default: ``$ENERGYQL_CLIP``, else the world's ``clip_model``).
        face_attributes: the faces world's attribute backend, ``auto``, ``clip``, ``fairface``
            or ``fairface:PATH`` (default: ``$ENERGYQL_FACE_ATTRIBUTES``, else ``auto``).

    The two environment defaults are read here, once; the models and the manifest's controls
    record use the values kept on the object (``clip_spec``, ``face_attributes``).
    """

    def __init__(self, catalog: Catalog | str, *, device: str = "cpu",
                 clip_copies: int | None = None, attributes: nn.Module | None = None,
                 clip_settings: ClipSettings | None = None, clip: str | None = None,
                 face_attributes: str | None = None):
        from energyql.controls.attributes import default_face_attributes, face_attribute_backend
        from energyql.controls.clip import default_clip_spec, parse_clip_spec

        self.catalog = CATALOGS[catalog] if isinstance(catalog, str) else catalog
        self.device = device
        # Checked now (a bad spec fails when the set is built, not at the first image).
        self.clip_spec = (clip or "").strip() or default_clip_spec(self.catalog)
        if self.clip_spec:  # a world may name no CLIP
            parse_clip_spec(self.clip_spec)
        self.face_attributes = (face_attributes or "").strip() or default_face_attributes()
        face_attribute_backend(self.face_attributes)
        self.clip_settings = clip_settings or self.catalog.clip
        self.clip_copies = self.clip_settings.copies if clip_copies is None else clip_copies
        self._attributes = attributes
        self._poses: dict[str, nn.Module] = {}
        self._identities: dict[str, nn.Module] = {}

    def pose(self, control: Any) -> nn.Module:
        """The pose model that reads a catalog control's parameters from images (loaded once)."""
        if control.model not in self._poses:
            self._poses[control.model] = registry.load(control.model, kind="pose",
                                                       device=self.device)
        return self._poses[control.model]

    def identity(self, what: str) -> nn.Module:
        """The embedding that ``keep(what)`` holds fixed (loaded once)."""
        keepables = dict(self.catalog.keepables)
        model = keepables[check_choice(what, keepables, error=EnergyQLError,
                                       what=f"keepable property of the {self.catalog.name} world")]
        if model not in self._identities:
            self._identities[model] = registry.load(model, kind="identity", device=self.device)
        return self._identities[model]

    @property
    def attributes(self) -> nn.Module:
        if self._attributes is None:
            from energyql.controls.attributes import load_attribute_model

            self._attributes = load_attribute_model(self.catalog, device=self.device,
                                                    clip_spec=self.clip_spec,
                                                    backend=self.face_attributes)
        return self._attributes

    @property
    def notices(self) -> tuple[str, ...]:
        """One-line notices from the loaded judges (e.g. FairFace missing), for the manifest."""
        if self._attributes is None:
            return ()
        return tuple(getattr(self._attributes, "notices", ()))

    def predicate_weight(self, attrs: set[str]) -> float:
        """The weight of a predicate energy on ``attrs``: its judge's (PromptGen's 100 for a
        CelebA classifier), when every attribute's judge declares the same one; else 1."""
        declared = getattr(self.attributes, "energy_weights", None) or {}
        weights = {declared.get(a, 1.0) for a in attrs}
        return weights.pop() if len(weights) == 1 else 1.0

    def clip(self, spec: str | None) -> nn.Module:
        """The CLIP a term names, or this set's default (:attr:`clip_spec`)."""
        from energyql.controls.clip import load_clip

        return load_clip(spec or self.clip_spec, self.device)


class _LogProb(TermVisitor[LogProb]):
    """The log-probability function of a probability-valued term."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def on_predicate(self, term: g.Predicate) -> LogProb:
        attribute = self.catalog.attribute(term.attr)
        assert attribute is not None  # the program was checked against this catalog
        return predicate_log_prob(term.attr, attribute.values.index(term.value))

    def on_not(self, term: g.Not) -> LogProb:
        return not_log_prob(self.visit(term.term))

    def on_and(self, term: g.And) -> LogProb:
        return and_log_prob([self.visit(t) for t in term.terms])

    def on_or(self, term: g.Or) -> LogProb:
        return or_log_prob([self.visit(t) for t in term.terms])


def _nothing_asked(log_probs: dict[str, torch.Tensor]) -> torch.Tensor:
    """log 1 per image: a restore target with nothing asked is the generator's own."""
    return torch.zeros_like(next(iter(log_probs.values()))[:, 0])


class _LowerTerm(TermVisitor[EnergyTerm]):
    """Pointwise graph nodes -> energy modules."""

    def __init__(self, models: ControlModels):
        self.models = models

    def visit(self, term: Any, *args: Any, **kwargs: Any) -> EnergyTerm:
        if is_probability(term):
            return self.on_probability(term)
        return super().visit(term, *args, **kwargs)

    def on_probability(self, term: g.Term) -> EnergyTerm:
        energy: EnergyTerm = PredicateEnergy(_LogProb(self.models.catalog).visit(term), str(term))
        weight = self.models.predicate_weight(set(g.attributes_of(term)))
        return energy if weight == 1.0 else ScaledEnergy(weight, energy, str(term))

    def on_clip(self, term: g.Clip) -> EnergyTerm:
        settings = self.models.clip_settings
        copies = term.augment if term.augment is not None else self.models.clip_copies
        return ClipEnergy(self.models.clip(term.model), term.text, copies=copies,
                          weight=settings.weight, augment=settings.augment_options,
                          augment_at=settings.augment_at, text=str(term))

    def on_scale(self, term: g.Scale) -> EnergyTerm:
        return ScaledEnergy(float(term.weight), self.visit(term.term), str(term))

    def on_and(self, term: g.And) -> EnergyTerm:
        return SumEnergy([self.visit(t) for t in term.terms], str(term))

    def on_or(self, term: g.Or) -> EnergyTerm:
        return SoftOrEnergy([self.visit(t) for t in term.terms], str(term))

    def fallback(self, term: Any) -> EnergyTerm:
        raise EnergyQLError(f"cannot lower '{term}' to an energy",
                            hint="only pointwise terms (predicates, clip, weights, and/or) "
                                 "lower to energies; constraints belong to a stage")


def lower_term(node: g.Term, models: ControlModels) -> EnergyTerm:
    """Return the energy module for one pointwise graph node."""
    return _LowerTerm(models).visit(node)


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
        self.constraints = ConstraintList(constraints)
        self.attribute_model = attributes
        # Conditional stages: the flow's context entries, and whether a term compares each
        # sample with the same noise at another context.
        self.context = list(context or [])
        self.paired = paired
        # Sliders that move a constraint's target or tilt make λ a function of the setting.
        sliders = slider_params(self.context)
        self.lambda_grid: LambdaGrid | None = None
        if sliders and constraints:
            if len(sliders) > MAX_GRID_SLIDERS:
                raise EnergyQLError(f"a stage with constraints takes at most {MAX_GRID_SLIDERS} "
                                    f"sliders, not {len(sliders)}",
                                    hint="fix some of the numbers, or split the stage")
            self.lambda_grid = LambdaGrid(sliders, [self.context.index(p) for p in sliders],
                                          sum(c.target.numel() for c in self.constraints))
            start = 0
            for constraint in self.constraints:
                stop = start + constraint.target.numel()
                constraint.grid = (self.lambda_grid, start, stop)
                start = stop

    @property
    def sliders(self) -> list[ContextParam]:
        """The stage's sliders (context entries set at sample time)."""
        return slider_params(self.context)

    @property
    def weight_slider_terms(self) -> list[SliderScaledEnergy]:
        """The pointwise terms whose weight is a slider (``(w in 0..3) * term``)."""
        return [term for term in self.pointwise if isinstance(term, SliderScaledEnergy)]

    @property
    def has_weight_slider(self) -> bool:
        """Whether a slider scales a term's weight, not (only) a ``dist``'s target."""
        return bool(self.weight_slider_terms)

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


class _StageParts:
    """What a stage's terms lower to: pointwise energies, constraints, the flow's context."""

    def __init__(self) -> None:
        self.pointwise: list[EnergyTerm] = []
        self.constraints: list[ConstraintEnergy] = []
        self.context: list[ContextParam] = []
        self.paired = False  # a term compares each sample with its reference


class _LowerStageTerm(TermVisitor[None]):
    """Adds one top-level term of a stage to its :class:`_StageParts`."""

    def __init__(self, models: ControlModels, parts: _StageParts):
        self.models, self.parts = models, parts

    def on_constraint(self, term: g.Constraint) -> None:
        given = None
        target_at = term.target_at if term.sliders else None
        if term.deferred:  # restore: p0(attrs | given), estimated by prepare_targets
            log_prob = _LogProb(self.models.catalog)
            given = (and_log_prob([log_prob.visit(t) for t in term.given]) if term.given
                     else _nothing_asked)
        self.parts.constraints.append(ConstraintEnergy(
            term.kind, tuple(term.attrs), tuple(term.target), str(term), given=given,
            size=term.size, given_text=" & ".join(str(t) for t in term.given),
            target_at=target_at))

    def on_restore(self, term: g.Restore) -> None:
        for constraint in term.constraints:
            self.on_constraint(constraint)

    def on_control(self, term: g.Control) -> None:
        control = self.models.catalog.control(term.name)
        params = [ContextParam(term.name, p.name, p.low, p.high) for p in term.params]
        start = len(self.parts.context)
        self.parts.context.extend(params)
        self.parts.pointwise.append(PoseEnergy(self.models.pose(control), params,
                                               list(range(start, start + len(params))), str(term)))

    def on_keep(self, term: g.Keep) -> None:
        self.parts.pointwise.append(KeepEnergy(self.models.identity(term.what), str(term)))
        self.parts.paired = True

    def on_scale(self, term: g.Scale) -> None:
        if term.slider is None:
            return self.fallback(term)
        column = [p.name for p in self.parts.context].index(term.slider.name)
        self.parts.pointwise.append(SliderScaledEnergy(
            term.weight, column, lower_term(term.term, self.models), str(term)))
        return None

    def fallback(self, term: Any) -> None:
        self.parts.pointwise.append(lower_term(term, self.models))


def lower_stage(stage: g.Stage, models: ControlModels,
                sliders: Sequence[g.Slider] | None = None) -> StageEnergy:
    """Return the StageEnergy for a checked ``graph.Stage``.

    ``sliders`` are the sliders the stage takes as context (``Program.stage_sliders``: its
    own and those of the stages before it); default: its own.
    """
    parts = _StageParts()
    # Sliders come first in the context, then the controls' parameters as they are lowered.
    parts.context.extend(ContextParam(SLIDER, s.name, s.low, s.high)
                         for s in (stage.sliders if sliders is None else sliders))
    lower = _LowerStageTerm(models, parts)
    for term in stage.terms:
        lower.visit(term)
    if parts.constraints and any(p.control != SLIDER for p in parts.context):
        raise EnergyQLError(
            f"'{stage}' mixes distributional constraints with a conditional control",
            hint="put the constraint in its own stage before the conditional one")
    needs_attributes = parts.constraints or any(g.attributes_of(t) for t in stage.terms)
    return StageEnergy(parts.pointwise, parts.constraints,
                       models.attributes if needs_attributes else None, parts.context,
                       paired=parts.paired)
