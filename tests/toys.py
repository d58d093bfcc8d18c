"""Toy generators and energies shared by tests: 2-D targets whose exact answer is known."""

import torch

from energyql.energies.base import EnergyTerm
from energyql.energies.lower import StageEnergy
from energyql.generators.base import Generator


class PointGenerator(Generator):
    """'Images' are the latent points themselves: the trainer sees a 2-D world."""

    def __init__(self, dim: int = 2):
        super().__init__()
        self.latent_dim = dim
        self.id = "points"
        self.register_buffer("anchor", torch.zeros(1))

    def decode(self, z, context=None):
        return z


class QuadraticEnergy(EnergyTerm):
    """E(x) = ½ (x − m)ᵀ diag(a) (x − m): with a N(0, I) prior the target is Gaussian."""

    def __init__(self, mean, precision):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean))
        self.register_buffer("a", torch.tensor(precision))
        self.text = "quadratic"

    def forward(self, features):
        return 0.5 * ((features.images - self.mean) ** 2 * self.a).sum(1)

    def exact_target(self):
        precision = 1 + self.a
        return self.a * self.mean / precision, 1 / precision  # mean, variance per axis


class BrokenEnergy(EnergyTerm):
    """Returns NaN on the steps listed (or always)."""

    def __init__(self, bad_calls=None):
        super().__init__()
        self.calls = 0
        self.bad_calls = bad_calls
        self.text = "broken(term)"

    def forward(self, features):
        self.calls += 1
        value = features.images.pow(2).sum(1)
        if self.bad_calls is None or self.calls in self.bad_calls:
            return value * float("nan")
        return value


def stage(*terms):
    return StageEnergy(list(terms), [])


class SideAttribute(torch.nn.Module):
    """Attribute 'side' of a 2-D point: soft sign of x, values (left, right)."""

    def forward(self, points):
        logits = torch.stack([-4 * points[:, 0], 4 * points[:, 0]], 1)
        return {"side": torch.log_softmax(logits, 1)}
