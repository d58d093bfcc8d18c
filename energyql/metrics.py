"""A run's evaluation figures as a typed, read-only record: where their keys are named for reading.

:func:`energyql.evaluation.evaluate` returns the figures as a plain dict (what ``metrics.json``
holds and ``energyql eval --json`` prints); the report, ``energyql run``'s and ``energyql eval``'s
tables read them through :class:`RunMetrics` instead of by string key::

    figures = RunMetrics.from_dict(json.loads(Path("runs/x/metrics.json").read_text()))
    figures.kl_to_target            # {"size": 0.004}
    figures.base.attributes         # the base generator's shares (base is None if not measured)
    figures.truth                   # None unless the world says what it drew
    figures.to_dict()               # the dict it was read from, as written

Optional sections read as the figures' readers always took them: a missing mapping is empty,
a missing section (``base``, ``truth``, ``closeness``, ``frechet``) or figure is None. A
section of the wrong kind (a list where a mapping belongs) is a ``TypeError`` naming its key;
the values themselves are kept as written. Nothing here imports torch.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: name -> figure (value -> share, constraint -> KL, stage -> ESS/N, ...)
Figures = Mapping[str, float]
#: name -> figure, None where it could not be measured
MaybeFigures = Mapping[str, float | None]


def _mapping(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    """``data[key]`` as a mapping: empty when absent or null; TypeError when something else."""
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TypeError(f"{where}'{key}' is of type {type(value).__name__}, not a mapping")
    return value


def _nested(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Mapping[str, Any]]:
    """``data[key]`` as a mapping of mappings (``attribute -> value -> share``)."""
    outer = _mapping(data, key, where)
    for name in outer:
        _mapping(outer, name, f"{where}'{key}': ")
    return outer


@dataclass(frozen=True)
class Closeness:
    """How close the flow is to its exact target, from exact log-weights on its own samples.

    Arguments:
        ess_fraction: Kish's ESS over N (1: the flow is the target).
        kl: the estimate of KL(flow ‖ target) (0: the flow is the target).
        samples: how many samples the figures come from.
    """

    ess_fraction: float | None = None
    kl: float | None = None
    samples: int | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Closeness:
        """Return the closeness record of one stage (``metrics["closeness"][stage]``)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"closeness is of type {type(data).__name__}, not a mapping")
        return cls(data.get("ess_fraction"), data.get("kl"), data.get("samples"))


@dataclass(frozen=True)
class Frechet:
    """The Fréchet distance to exact-target samples in the world judge's feature space.

    Arguments:
        frechet: the controlled samples' distance (0 is the target).
        base_frechet: the base generator's distance, the scale to compare with.
        samples: how many samples each side had.
        reference: the sampler that drew the exact target's samples (e.g. ``"flow+sir"``).
    """

    frechet: float
    base_frechet: float
    samples: int
    reference: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Frechet:
        """Return the record of ``metrics["frechet"]`` (its three figures are required)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"'frechet' is of type {type(data).__name__}, not a mapping")
        return cls(data["frechet"], data["base_frechet"], data["samples"], data.get("reference"))


@dataclass(frozen=True)
class TruthDrift:
    """Collateral drift measured on what the world drew, not on what the judge read.

    Arguments:
        tv: attribute -> total variation to the exact target's distribution.
        base_samples: the base samples the target's distribution was estimated from.
        base_ess: their effective sample size (alone).
        tv_se: attribute -> the TV's bootstrap standard error.
        flow_samples: the sampler's own samples pooled with the base samples (0: none).
        reference_ess: the effective sample size of the pooled estimate.
    """

    tv: Figures = field(default_factory=dict)
    base_samples: int | None = None
    base_ess: float | None = None
    tv_se: Figures = field(default_factory=dict)
    flow_samples: int | None = None
    reference_ess: float | None = None


@dataclass(frozen=True)
class Truth:
    """The judged figures recomputed from what the world says it drew (embedded worlds).

    Arguments:
        predicate_share, kl_to_target, tv_to_target, attributes: as on :class:`RunMetrics`.
        judge_agreement: attribute -> share of samples the judge read as drawn.
        pose_error, identity_within, identity_between: a conditional run's figures on truth.
        attributes_kept: attribute -> share of noises whose drawn value stays the same across
            a conditional sweep.
        collateral_drift: the drift on truth, None where not measured.
    """

    predicate_share: Figures = field(default_factory=dict)
    kl_to_target: Figures = field(default_factory=dict)
    tv_to_target: Figures = field(default_factory=dict)
    attributes: Mapping[str, Figures] = field(default_factory=dict)
    judge_agreement: Figures = field(default_factory=dict)
    pose_error: Figures = field(default_factory=dict)
    identity_within: float | None = None
    identity_between: float | None = None
    attributes_kept: Figures = field(default_factory=dict)
    collateral_drift: TruthDrift | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Truth:
        """Return the record of ``metrics["truth"]``."""
        where = "truth: "
        drift = _mapping(data, "collateral_drift", where)
        return cls(
            predicate_share=_mapping(data, "predicate_share", where),
            kl_to_target=_mapping(data, "kl_to_target", where),
            tv_to_target=_mapping(data, "tv_to_target", where),
            attributes=_nested(data, "attributes", where),
            judge_agreement=_mapping(data, "judge_agreement", where),
            pose_error=_mapping(data, "pose_error", where),
            identity_within=data.get("identity_within"),
            identity_between=data.get("identity_between"),
            attributes_kept=_mapping(data, "attributes_kept", where),
            collateral_drift=TruthDrift(_mapping(drift, "tv", "truth: collateral drift: "),
                                        drift.get("base_samples"), drift.get("base_ess"),
                                        _mapping(drift, "tv_se", "truth: collateral drift: "),
                                        drift.get("flow_samples"), drift.get("reference_ess"))
            if drift else None,
        )


@dataclass(frozen=True)
class SliderRow:
    """One setting of a slider sweep: what was asked for and got there.

    Arguments:
        value: the slider's value at this setting.
        requested: ``"attr = value"`` -> the share the dist entry asked for here.
        judged, truth: the same keys -> the share achieved, judged and on ground truth.
        predicate_share, truth_predicate_share: the predicate shares, judged and on truth.
        kl_to_target, truth_kl_to_target: the KL to each target, judged and on truth.
        ess_fraction, kl: the flow's closeness to its target at this setting.
    """

    value: float
    requested: Figures = field(default_factory=dict)
    judged: MaybeFigures = field(default_factory=dict)
    truth: MaybeFigures = field(default_factory=dict)
    predicate_share: Figures = field(default_factory=dict)
    truth_predicate_share: Figures = field(default_factory=dict)
    kl_to_target: Figures = field(default_factory=dict)
    truth_kl_to_target: Figures = field(default_factory=dict)
    ess_fraction: float | None = None
    kl: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SliderRow:
        """Return one row of ``metrics["sliders"][name]`` (its ``value`` is required)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a slider row is of type {type(data).__name__}, not a mapping")
        where = "slider row: "
        return cls(
            value=data["value"],
            requested=_mapping(data, "requested", where),
            judged=_mapping(data, "judged", where),
            truth=_mapping(data, "truth", where),
            predicate_share=_mapping(data, "predicate_share", where),
            truth_predicate_share=_mapping(data, "truth_predicate_share", where),
            kl_to_target=_mapping(data, "kl_to_target", where),
            truth_kl_to_target=_mapping(data, "truth_kl_to_target", where),
            ess_fraction=data.get("ess_fraction"),
            kl=data.get("kl"),
        )


@dataclass(frozen=True)
class RunMetrics:
    """The figures of one evaluation (``metrics.json``), read-only and typed.

    Built by :meth:`from_dict`; :meth:`to_dict` gives back the dict it was built from, so that
    what is written stays exactly what :func:`~energyql.evaluation.evaluate` returned.
    ``RunMetrics()`` is the record of no figures at all.

    Arguments:
        samples: how many samples were judged (None: not recorded).
        attributes: attribute -> value -> share, as read by the attribute model.
        joint: ``"a x b"`` -> ``"va x vb"`` -> share.
        kl_to_target, tv_to_target: constraint -> KL and total variation to its target.
        kl_to_uniform: attribute -> KL to the uniform distribution over its values.
        predicate_share: predicate text (and ``"all"``) -> share of samples satisfying it.
        energies: term text -> its mean energy.
        base: the same figures of the base generator; None where it was not measured.
        truth: the figures on what the world drew; None where the world does not say.
        collateral_drift: unmentioned attribute -> TV to the exact target's distribution.
        ess: stage -> ESS/N towards the exact target (kept for older metrics).
        closeness: stage -> its :class:`Closeness`; None in metrics written before it was
            measured (then ``ess`` holds the figure).
        pose_error: context parameter -> mean |read − requested| (conditional runs).
        identity_within, identity_between: identity distance across one noise's sweep and
            between noises (conditional runs); None where not measured.
        setting: slider -> the value every figure was measured at (runs with sliders).
        sliders: slider -> the rows of its sweep, low to high.
        frechet: the Fréchet distance to the exact target; None where not measured.
        evaluation_error: why the evaluation stopped early; None when it did not.
    """

    samples: int | None = None
    attributes: Mapping[str, Figures] = field(default_factory=dict)
    joint: Mapping[str, Figures] = field(default_factory=dict)
    kl_to_target: Figures = field(default_factory=dict)
    tv_to_target: Figures = field(default_factory=dict)
    kl_to_uniform: Figures = field(default_factory=dict)
    predicate_share: Figures = field(default_factory=dict)
    energies: Figures = field(default_factory=dict)
    base: RunMetrics | None = None
    truth: Truth | None = None
    collateral_drift: MaybeFigures = field(default_factory=dict)
    ess: Figures = field(default_factory=dict)
    closeness: Mapping[str, Closeness] | None = None
    pose_error: Figures = field(default_factory=dict)
    identity_within: float | None = None
    identity_between: float | None = None
    setting: Figures = field(default_factory=dict)
    sliders: Mapping[str, tuple[SliderRow, ...]] = field(default_factory=dict)
    frechet: Frechet | None = None
    evaluation_error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunMetrics:
        """Return the typed view of an evaluation's figures (the ``metrics.json`` dict)."""
        if not isinstance(data, Mapping):
            raise TypeError(f"metrics are of type {type(data).__name__}, not a mapping")
        where = ""  # top-level keys are named bare
        sliders = _mapping(data, "sliders", where)
        return cls(
            samples=data.get("samples"),
            attributes=_nested(data, "attributes", where),
            joint=_nested(data, "joint", where),
            kl_to_target=_mapping(data, "kl_to_target", where),
            tv_to_target=_mapping(data, "tv_to_target", where),
            kl_to_uniform=_mapping(data, "kl_to_uniform", where),
            predicate_share=_mapping(data, "predicate_share", where),
            energies=_mapping(data, "energies", where),
            base=cls.from_dict(data["base"]) if "base" in data else None,
            truth=Truth.from_dict(_mapping(data, "truth", where)) if data.get("truth") else None,
            collateral_drift=_mapping(data, "collateral_drift", where),
            ess=_mapping(data, "ess", where),
            closeness=None if "closeness" not in data else {
                stage: Closeness.from_dict(figures)
                for stage, figures in _mapping(data, "closeness", where).items()},
            pose_error=_mapping(data, "pose_error", where),
            identity_within=data.get("identity_within"),
            identity_between=data.get("identity_between"),
            setting=_mapping(data, "setting", where),
            sliders={name: tuple(SliderRow.from_dict(row) for row in _rows(sliders, name))
                     for name in sliders},
            frechet=Frechet.from_dict(data["frechet"]) if "frechet" in data else None,
            evaluation_error=data.get("evaluation_error") or None,
            raw=data,
        )

    @classmethod
    def of(cls, metrics: RunMetrics | Mapping[str, Any]) -> RunMetrics:
        """Return ``metrics`` itself if typed already, else its typed view."""
        return metrics if isinstance(metrics, RunMetrics) else cls.from_dict(metrics)

    def to_dict(self) -> dict[str, Any]:
        """Return a copy of the dict this record was read from, keys in their order."""
        return copy.deepcopy(dict(self.raw))


def _rows(sliders: Mapping[str, Any], name: str) -> list[Mapping[str, Any]]:
    rows = sliders[name]
    if not isinstance(rows, (list, tuple)):
        raise TypeError(f"the sweep of slider '{name}' is of type {type(rows).__name__}, "
                        "not a list")
    return list(rows)


__all__ = ["Closeness", "Frechet", "RunMetrics", "SliderRow", "Truth", "TruthDrift"]
