"""Predicate energies: ``-log p`` of a probability-valued expression of attributes.

``attr == v`` has p from the world's classifier; ``not P`` is 1 − p; ``A & B`` of predicates is
pA·pB; ``A or B`` is the soft OR pA + pB − pA·pB, i.e. 1 − (1 − pA)(1 − pB). Everything is
computed in log space so that confident classifiers give finite energies and gradients.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from energyql.energies.base import EnergyTerm, Features

LogProb = Callable[[dict[str, torch.Tensor]], torch.Tensor]

# A probability of exactly 1 would make log(1 − p) infinite; clip log p just below 0.
_MAX_LOG_PROB = -1e-6


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """Return log(1 − exp(x)) for x < 0, accurately in both regimes."""
    x = x.clamp(max=_MAX_LOG_PROB)
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def predicate_log_prob(attr: str, index: int) -> LogProb:
    return lambda lp: lp[attr][:, index]


def not_log_prob(inner: LogProb) -> LogProb:
    return lambda lp: log1mexp(inner(lp))


def and_log_prob(parts: list[LogProb]) -> LogProb:
    return lambda lp: torch.stack([p(lp) for p in parts]).sum(0)


def or_log_prob(parts: list[LogProb]) -> LogProb:
    return lambda lp: log1mexp(torch.stack([log1mexp(p(lp)) for p in parts]).sum(0))


class PredicateEnergy(EnergyTerm):
    """``-log p(x)`` for a probability-valued expression (see the module docstring)."""

    flat = True

    def __init__(self, log_prob: LogProb, text: str):
        super().__init__()
        self.log_prob = log_prob
        self.text = text

    def probability(self, features: Features) -> torch.Tensor:
        return self.log_prob(features.attribute_log_probs()).clamp(max=_MAX_LOG_PROB).exp()

    def forward(self, features: Features) -> torch.Tensor:
        return -self.log_prob(features.attribute_log_probs()).clamp(max=_MAX_LOG_PROB)
