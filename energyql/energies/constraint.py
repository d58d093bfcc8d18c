"""Distributional constraints: ``uniform(A x B)``, ``debias(...)``, ``dist(...)``.

With φ(x) the classifier's joint probability vector over the constrained attributes (the
outer product of their value probabilities), a constraint becomes the pointwise energy
``-λ·φ(x)``, with λ fitted (see :mod:`energyql.moments`) so that the stage's final
distribution has the target moments ``E[φ] = target``.
"""

from __future__ import annotations

import torch

from energyql.energies.base import EnergyTerm, Features


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

    def __init__(self, kind: str, attrs: tuple[str, ...], target: tuple[float, ...], text: str):
        super().__init__()
        self.kind = kind
        self.attrs = attrs
        self.text = text
        self.register_buffer("target", torch.tensor(target, dtype=torch.float32))
        self.register_buffer("lam", torch.zeros(len(target)))
        # The part of λ that corrects for the flow's approximation error (see train.py).
        self.register_buffer("offset", torch.zeros(len(target)))

    def phi(self, features: Features) -> torch.Tensor:
        return joint_probabilities(features.attribute_log_probs(), self.attrs)

    def forward(self, features: Features) -> torch.Tensor:
        return -(self.phi(features) * self.lam).sum(1)
