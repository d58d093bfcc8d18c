"""Conditional energies: a control's parameters (pose) and paired energies (keep identity).

A conditional stage trains a flow ``T(eps, c)`` whose context ``c`` holds the control's free
parameters, drawn uniformly from their ranges at every step. ``pose(x in a..b)`` asks the image
to have the requested value:

    E_pose(x, c) = ½ Σ_p ((pose_p(x) − c_p) / σ_p)²        σ_p = tolerance · (b − a)

and ``keep(identity)`` compares each sample with the same noise at another context c':

    E_keep(x, x') = s · (1 − cos(id(x), id(x')))            x = G(T(eps, c)), x' = G(T(eps, c'))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from energyql.energies.base import EnergyTerm, Features


@dataclass(frozen=True)
class ContextParam:
    """One entry of a conditional flow's context: a control parameter and its range."""

    control: str
    name: str
    low: float
    high: float

    @property
    def middle(self) -> float:
        """The middle of the range (where an unset slider or parameter sits)."""
        return (self.low + self.high) / 2

    def normalize(self, value: torch.Tensor) -> torch.Tensor:
        """Map the range to [-1, 1], the scale the flow's context input sees."""
        return (value - (self.low + self.high) / 2) / ((self.high - self.low) / 2 or 1.0)

    def to_dict(self) -> dict:
        return {"control": self.control, "name": self.name, "low": self.low, "high": self.high}


def normalize_context(params: list[ContextParam], context: torch.Tensor) -> torch.Tensor:
    return torch.stack([p.normalize(context[:, i]) for i, p in enumerate(params)], dim=1)


def inherited_context(base: object, params: list[ContextParam],
                      context: torch.Tensor | None) -> torch.Tensor | None:
    """The columns of ``context`` (values laid out as ``params``) that ``base`` takes: a
    stage after a slider stage passes the earlier stage its sliders' values, by name. None
    when ``base`` is unconditional (a generator, or a stage without sliders)."""
    wanted = getattr(base, "context_params", ())
    if not wanted or context is None:
        return None  # a conditional base without values says so itself (flow_context)
    names = [p.name for p in params]
    missing = [p.name for p in wanted if p.name not in names]
    if missing:
        raise ValueError(f"the stage's context lacks its base's {', '.join(missing)}")
    return context[:, [names.index(p.name) for p in wanted]]


def sample_context(params: list[ContextParam], n: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``n`` contexts uniformly from the parameters' ranges (physical units)."""
    u = torch.rand(n, len(params), generator=generator)
    low = torch.tensor([p.low for p in params])
    high = torch.tensor([p.high for p in params])
    return low + u * (high - low)


class PoseEnergy(EnergyTerm):
    """Squared error between a pose model's reading and the requested parameters."""

    sigma: torch.Tensor

    def __init__(self, pose_model: nn.Module, params: list[ContextParam], columns: list[int],
                 text: str, tolerance: float = 0.025):
        super().__init__()
        self.pose_model = pose_model
        self.names = [p.name for p in params]
        self.columns = columns  # where each parameter sits in the stage's context vector
        self.register_buffer("sigma", torch.tensor([tolerance * (p.high - p.low) for p in params]))
        self.text = text

    def forward(self, features: Features) -> torch.Tensor:
        if features.context is None:
            raise ValueError(f"'{self.text}' needs a context (requested pose values)")
        readings = self.pose_model(features.images)
        predicted = torch.stack([readings[name] for name in self.names], dim=1)
        wanted = features.context[:, self.columns].to(predicted.dtype)
        return 0.5 * (((predicted - wanted) / self.sigma) ** 2).sum(1)


class KeepEnergy(EnergyTerm):
    """Paired energy: identity embeddings of a sample and its reference agree."""

    def __init__(self, embedder: nn.Module, text: str, scale: float = 20.0):
        super().__init__()
        self.embedder = embedder
        self.scale = scale
        self.text = text

    def forward(self, features: Features) -> torch.Tensor:
        if features.reference_images is None:
            raise ValueError(
                f"'{self.text}' needs reference images (the same noise, another context)")
        a = F.normalize(self.embedder(features.images), dim=-1)
        b = F.normalize(self.embedder(features.reference_images), dim=-1)
        return self.scale * (1 - (a * b).sum(-1))


def identity_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PromptGen's identity distance √(2 − 2·cos) between embeddings."""
    cos = (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)
    return (2 - 2 * cos).clamp(min=0).sqrt()
