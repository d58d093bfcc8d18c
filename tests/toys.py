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


class TinyImageGenerator(Generator):
    """A random, untrained convolutional decoder to 32x32 images in the shapes catalog.

    Its images mean nothing, but the shapes classifier still gives them attribute
    distributions, which is all the plumbing tests (CLI, artifacts, reports) need.
    """

    def __init__(self, latent_dim: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.latent_dim = latent_dim
        self.id = "toy-shapes"
        self.catalog = "shapes"
        self.image_size = 32
        self.weights_digest = "toy"
        self.net = torch.nn.Sequential(
            torch.nn.Linear(latent_dim, 16 * 8 * 8), torch.nn.Unflatten(1, (16, 8, 8)),
            torch.nn.Upsample(scale_factor=4), torch.nn.Conv2d(16, 3, 3, padding=1))
        self.requires_grad_(False)

    def decode(self, z, context=None):
        return torch.sigmoid(2 * self.net(z))


def load_tiny(spec=None, *, device="cpu", **options):
    return TinyImageGenerator().to(device)


def register_tiny() -> str:
    from energyql.generators.registry import GeneratorSpec, register

    register(GeneratorSpec("toy-shapes", "shapes", "tests.toys:load_tiny", "test-only decoder"))
    return "toy-shapes"
