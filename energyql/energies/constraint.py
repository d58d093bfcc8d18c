"""Distributional constraints: ``uniform(A x B)``, ``debias(...)``, ``dist(...)``.

With φ(x) the classifier's joint probability vector over the constrained attributes (the
outer product of their value probabilities), a constraint becomes the pointwise energy
``-λ·φ(x)``, with λ fitted (see :mod:`energyql.moments`) so that the stage's final
distribution has the target moments ``E[φ] = target``.

A ``restore`` constraint (what ``debias(clip_bias)`` resolves to) has a *deferred* target,
p0(attrs | given): :func:`prepare_targets` estimates it once per stage, before the first λ fit,
from the root generator's samples weighted by the probability of what was asked.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, cast

import torch
from torch import nn

from energyql.energies.base import EnergyTerm, Features
from energyql.energies.predicate import LogProb
from energyql.errors import TrainingError

#: Root generator samples that estimate a restore target (``moment_samples`` by default).
RESTORE_SAMPLES = 4096
#: Below this effective sample size the asked-for predicates are too rare for an estimate.
MIN_RESTORE_ESS = 8.0


def joint_probabilities(log_probs: dict[str, torch.Tensor], attrs: tuple[str, ...]) -> torch.Tensor:
    """Return the outer product of the attributes' probabilities, flattened: ``(B, ∏K)``.

    Values are in row-major order of the attributes as written (``itertools.product`` order).
    """
    joint = log_probs[attrs[0]].exp()
    for attr in attrs[1:]:
        joint = (joint[:, :, None] * log_probs[attr].exp()[:, None, :]).flatten(1)
    return joint


class ConstraintEnergy(EnergyTerm):
    """``-λ·φ(x)`` for one constraint; λ lives in a buffer and is refitted during training."""

    flat = True  # φ is a classifier's probabilities

    target: torch.Tensor
    lam: torch.Tensor
    offset: torch.Tensor
    shift: torch.Tensor

    def __init__(self, kind: str, attrs: tuple[str, ...], target: tuple[float, ...], text: str,
                 *, given: LogProb | None = None, size: int | None = None,
                 given_text: str = "", target_at: Callable[[Mapping[str, float]],
                                                           tuple[float, ...]] | None = None):
        super().__init__()
        self.kind = kind
        # A dist whose entries are sliders: its target at a setting (None: a fixed target).
        self.target_at = target_at
        # Its λ per row, from the stage's LambdaGrid (attached by StageEnergy; not a
        # submodule here, the stage energy owns it): (grid, first column, last column).
        self.grid: tuple[Any, int, int] | None = None
        self.attrs = attrs
        self.text = text
        # A deferred target (restore): NaN until prepare_targets estimates p0(attrs | given).
        self.deferred = given is not None
        self.given = given
        self.given_text = given_text
        if self.deferred:
            target = (float("nan"),) * int(size or 0)
        self.register_buffer("target", torch.tensor(target, dtype=torch.float32))
        self.register_buffer("lam", torch.zeros(len(target)))
        # λ minus the exact fit: the flow's feedback correction plus ``shift`` (training/fit.py).
        self.register_buffer("offset", torch.zeros(len(target)))
        # The part of the offset that a tempered target (--temper) adds: λ fitted for the
        # tempered target minus the exact fit (0 for the exact target).
        self.register_buffer("shift", torch.zeros(len(target)))

    def phi(self, features: Features) -> torch.Tensor:
        return joint_probabilities(features.attribute_log_probs(), self.attrs)

    def lam_of(self, features: Features) -> torch.Tensor:
        """λ for each image (``(B, K)`` with a λ grid, else the one ``(K,)``)."""
        if self.grid is None:
            return self.lam
        grid, start, stop = self.grid
        if features.context is None:
            raise ValueError(f"'{self.text}' needs the sliders' values (a context)")
        return grid.at(features.context)[:, start:stop]

    def forward(self, features: Features) -> torch.Tensor:
        phi = self.phi(features)
        return -(phi * self.lam_of(features).to(phi.dtype)).sum(1)


class ConstraintList(nn.ModuleList):
    """The constraint terms of a stage, and the owner of their λ.

    λ is kept packed in the order of the terms: ``packed("lam")`` concatenates every term's
    λ, :meth:`set_lambda` gives each its part. Three views exist: ``lam`` (what the flow
    trains with: the exact fit plus ``offset``), :meth:`exact` (``lam - offset``: the fit
    for the stage's exact target, what evaluation and corrected samplers aim at) and
    ``shift`` (the part of ``offset`` that a tempered target adds). :meth:`state` and
    :meth:`load_state` carry all three through checkpoints.
    """

    VIEWS = ("lam", "offset", "shift")

    def __iter__(self) -> Iterator[ConstraintEnergy]:
        return (cast(ConstraintEnergy, term) for term in super().__iter__())

    @property
    def sizes(self) -> list[int]:
        return [c.target.numel() for c in self]

    def split(self, packed: torch.Tensor) -> list[torch.Tensor]:
        """Return a packed vector's part for each constraint, in order."""
        return list(packed.split(self.sizes))

    def packed(self, name: str) -> torch.Tensor:
        """Return every constraint's buffer ``name`` (lam, offset, shift, target), on the CPU."""
        if not len(self):
            return torch.zeros(0)
        return torch.cat([cast(torch.Tensor, getattr(c, name)).detach().cpu() for c in self])

    def exact(self) -> torch.Tensor:
        """Return the exact fit, ``lam - offset``, packed."""
        return self.packed("lam") - self.packed("offset")

    def target_at(self, values: Mapping[str, float]) -> torch.Tensor:
        """Return every constraint's target at a slider setting, packed (CPU)."""
        if not len(self):
            return torch.zeros(0)
        return torch.cat([torch.tensor(c.target_at(values), dtype=torch.float32)
                          if c.target_at is not None else c.target.detach().cpu() for c in self])

    def set_lambda(self, lam: torch.Tensor, offset: torch.Tensor | None = None,
                   shift: torch.Tensor | None = None) -> None:
        """Give each constraint its part of a packed λ (and of a packed offset and shift)."""
        for name, packed in zip(self.VIEWS, (lam, offset, shift)):
            if packed is None:
                continue
            for constraint, part in zip(self, self.split(packed)):
                buffer = getattr(constraint, name)
                buffer.copy_(part.to(buffer.device))

    def state(self) -> dict[str, torch.Tensor]:
        """Return every view of every constraint's λ by checkpoint key (``lam.0``, ...)."""
        return {f"{name}.{i}": getattr(c, name) for name in self.VIEWS
                for i, c in enumerate(self)}

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state` returned."""
        for name in self.VIEWS:
            for i, constraint in enumerate(self):
                getattr(constraint, name).copy_(tensors[f"{name}.{i}"])


def root_generator(base: Any) -> Any:
    """Return the generator under every trained stage of ``base`` (``base`` if untrained)."""
    stages = getattr(base, "stages", None)
    return stages[0].base if stages else base


@torch.no_grad()
def estimate_restore_targets(constraints: Sequence[ConstraintEnergy], root: Any, attributes: Any,
                             samples: int = RESTORE_SAMPLES, *, seed: int = 0,
                             batch: int = 256) -> dict[str, torch.Tensor]:
    """Return p0(attrs | given) per deferred constraint text, from ``samples`` root samples.

    Each sample is weighted by the product of the asked-for predicates' probabilities (the
    world's attribute model), and the target is the weighted mean of the constraint's φ, the
    same classifier probabilities its λ is fitted on.
    """
    rng = torch.Generator().manual_seed(seed)
    phis: list[list[torch.Tensor]] = [[] for _ in constraints]
    log_ws: list[list[torch.Tensor]] = [[] for _ in constraints]
    for start in range(0, samples, batch):
        z = root.sample_latent(min(batch, samples - start), generator=rng, device="cpu")
        features = Features(root.decode(z.to(root.device)).float(), attributes)
        log_probs = features.attribute_log_probs()
        for i, constraint in enumerate(constraints):
            phis[i].append(constraint.phi(features).double().cpu())
            given = constraint.given
            log_ws[i].append((given(log_probs) if given is not None
                              else torch.zeros(len(z))).double().cpu())
    targets: dict[str, torch.Tensor] = {}
    for i, constraint in enumerate(constraints):
        weights = torch.softmax(torch.cat(log_ws[i]), 0)
        ess = float(1.0 / (weights * weights).sum())
        if ess < MIN_RESTORE_ESS:
            raise TrainingError(
                f"cannot estimate the target of '{constraint.text}': what was asked "
                f"({constraint.given_text or 'nothing'}) holds for about {ess:.0f} of {samples} "
                "base samples", hint="raise the moment samples (--moment-samples), or ask for "
                "something the generator draws more often")
        target = (weights[:, None] * torch.cat(phis[i])).sum(0)
        targets[constraint.text] = (target / target.sum()).float()
    return targets


def prepare_targets(energy: Any, base: Any, samples: int = RESTORE_SAMPLES, *, seed: int = 0,
                    batch: int = 256) -> dict[str, list[float]]:
    """Estimate every deferred target of a stage energy in place; return them by text.

    ``base`` is the stage's base sampler: the targets come from the *root* generator under it,
    the distribution ``debias(clip_bias)`` brings attributes back to. Nothing happens (and
    ``{}`` is returned) for a stage without deferred constraints.
    """
    deferred = [c for c in energy.constraints if getattr(c, "deferred", False)]
    if not deferred:
        return {}
    targets = estimate_restore_targets(deferred, root_generator(base), energy.attribute_model,
                                       samples, seed=seed, batch=batch)
    set_targets(energy, targets)
    return {text: [round(v, 6) for v in t.tolist()] for text, t in targets.items()}


def set_targets(energy: Any, targets: Mapping[str, Sequence[float] | torch.Tensor]) -> None:
    """Give a stage energy's deferred constraints their targets (estimated, or from a
    manifest's ``targets``)."""
    for constraint in energy.constraints:
        if constraint.text in targets and getattr(constraint, "deferred", False):
            value = torch.as_tensor(targets[constraint.text], dtype=torch.float32)
            if value.shape != constraint.target.shape:
                raise TrainingError(f"the target of '{constraint.text}' has {value.numel()} "
                                    f"values; the constraint needs {constraint.target.numel()}")
            constraint.target.copy_(value.to(constraint.target.device))
