"""Combinators over general energies: sums (``&``), soft OR and weights."""

from __future__ import annotations

import torch
from torch import nn

from energyql.energies.base import EnergyTerm, Features


class SumEnergy(EnergyTerm):
    """Product of experts: the energies add."""

    def __init__(self, terms: list[EnergyTerm], text: str):
        super().__init__()
        self.terms = nn.ModuleList(terms)
        self.text = text

    @property
    def flat(self) -> bool:  # type: ignore[override]
        return all(t.flat for t in self.terms)

    def forward(self, features: Features) -> torch.Tensor:
        return torch.stack([t(features) for t in self.terms]).sum(0)


class SoftOrEnergy(EnergyTerm):
    """Soft OR of general energies: ``-logsumexp(-E_i)`` (a mixture of the experts)."""

    def __init__(self, terms: list[EnergyTerm], text: str):
        super().__init__()
        self.terms = nn.ModuleList(terms)
        self.text = text

    @property
    def flat(self) -> bool:  # type: ignore[override]
        return all(t.flat for t in self.terms)

    def forward(self, features: Features) -> torch.Tensor:
        return -torch.logsumexp(-torch.stack([t(features) for t in self.terms]), dim=0)


class ScaledEnergy(EnergyTerm):
    """``w · E``."""

    def __init__(self, weight: float, term: EnergyTerm, text: str):
        super().__init__()
        self.weight = weight
        self.term = term
        self.text = text

    @property
    def flat(self) -> bool:  # type: ignore[override]
        return self.term.flat

    def forward(self, features: Features) -> torch.Tensor:
        return self.weight * self.term(features)
