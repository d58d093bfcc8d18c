"""The portraits generator: ``z ~ N(0, I)`` -> portrait parameters -> the soft renderer.

The map from the latent to the scene is written down, not learned: each continuous factor is
the Gaussian CDF of one latent entry rescaled to its range, and each discrete factor a soft
one-hot of one latent entry cut at the quantiles of its (conditional) distribution, so the
generator's joint is the data's joint exactly, and it knows what it drew (:meth:`truth`).
The cuts are smooth (a logistic of slope :data:`SHARPNESS` in latent units), so images are
differentiable in ``z`` and a flow in front of the generator feels where a value changes.

Conditional factors mix the cuts of every conditioning value by its soft weight, e.g. the age
cuts of each appearance group weighted by the group's weights.

A ``prompt`` (:mod:`energyql.worlds.portraits.prompts`) selects who is drawn, P(gender) and
P(race); every other table is the same for every prompt. The default prompt is the data's
distribution, and the generator without a prompt, bit for bit.

Example:
    >>> gen = PortraitsGenerator()
    >>> z = gen.sample_latent(4)
    >>> gen.decode(z).shape, gen.truth(z)["age"].shape
    (torch.Size([4, 3, 64, 64]), torch.Size([4]))
"""

from __future__ import annotations

import hashlib
import json
import math

import torch

from energyql.generators.base import Generator
from energyql.worlds.portraits import prompts as P
from energyql.worlds.portraits import render as R

# Slope of the soft cuts, per unit of latent: the blend between two values spans about
# 4 / SHARPNESS latent units, a few per cent of the samples near each cut.
SHARPNESS = 60.0

# Latent layout: one entry per factor, in this order, then the nuisance entries.
DISCRETE = ("gender", "race", "age", "smiling", "glasses", "beard", "grey", "hair")
CONTINUOUS = ("yaw", "pitch", *R.IDENTITY, "light")
NUISANCE_DIMS = 6 + 3 + 3  # background (2 x RGB), shirt RGB, skin jitter
LATENT_DIM = len(DISCRETE) + len(CONTINUOUS) + NUISANCE_DIMS
# The default generator's digest (the map is written down: no weights file to hash).
ANALYTIC_DIGEST = "analytic-v1"


def _cuts(probabilities: torch.Tensor) -> torch.Tensor:
    """Latent thresholds (…, K-1) between K values with these probabilities (…, K)."""
    cumulative = probabilities.cumsum(-1)[..., :-1].clamp(1e-6, 1 - 1e-6)
    return math.sqrt(2) * torch.erfinv(2 * cumulative - 1)


def _soft_one_hot(z: torch.Tensor, cuts: torch.Tensor) -> torch.Tensor:
    """Weights (B, K) of K values for latent entries z (B,) and cuts (K-1,) or (B, K-1)."""
    above = torch.sigmoid(SHARPNESS * (z[:, None] - cuts))          # P(value index > j)
    ones = torch.ones_like(above[:, :1])
    upper = torch.cat([ones, above], 1)
    lower = torch.cat([above, torch.zeros_like(ones)], 1)
    return upper - lower


def _mixed(z: torch.Tensor, given: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Soft one-hot of a factor whose distribution depends on another factor's weights.

    ``table`` (G, K) holds the distribution for each value of the conditioning factor and
    ``given`` (B, G) its soft weights: the weights of each cut set are mixed by ``given``.
    """
    per_value = torch.stack([_soft_one_hot(z, _cuts(row.to(z))) for row in table], 1)
    return (given[:, :, None] * per_value).sum(1)


def _uniform(z: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * 0.5 * (1 + torch.erf(z / math.sqrt(2)))


def _tables(people: P.Prompt) -> dict[str, torch.Tensor]:
    """The generator's tables for a prompt's ``people`` (its P(gender) and P(race))."""
    ages, races = R.AGES, R.RACES
    beard_male = torch.tensor([R.P_BEARD_GIVEN_AGE_MALE[a] for a in ages])
    return {
        "gender": torch.tensor(people.gender),
        "race": torch.tensor(people.race),
        "age": torch.tensor([R.P_AGE_GIVEN_RACE[r] for r in races]),
        "smiling": torch.tensor([[1 - R.P_SMILING_GIVEN_AGE[a], R.P_SMILING_GIVEN_AGE[a]]
                                 for a in ages]),
        "glasses": torch.tensor([[1 - R.P_GLASSES_GIVEN_AGE[a], R.P_GLASSES_GIVEN_AGE[a]]
                                 for a in ages]),
        # Beard given (gender, age): rows male-young, male-adult, male-old, then female.
        "beard": torch.stack([torch.stack([1 - beard_male, beard_male], 1),
                              torch.tensor([[1 - R.P_BEARD_FEMALE, R.P_BEARD_FEMALE]] * 3)]
                             ).reshape(6, 2),
        "grey": torch.tensor([[1 - R.P_GREY_GIVEN_AGE[a], R.P_GREY_GIVEN_AGE[a]] for a in ages]),
        "colour": torch.tensor([R.P_HAIR_GIVEN_RACE[r] for r in races]) + 1e-6,
    }


class PortraitsGenerator(Generator):
    """The embedded portraits world's generator (no weights: the map is written down).

    Arguments:
        prompt: one of :data:`energyql.worlds.portraits.prompts.PROMPTS` (default: "a photo of
            a person", the data's distribution); an unknown one is a UsageError naming them.
    """

    id = "portraits"
    catalog = "portraits"
    image_size = R.IMAGE_SIZE
    knows_truth = True
    identity_factors = R.IDENTITY
    # The conditional distributions, registered as buffers by _tables()' names.
    p_gender: torch.Tensor
    p_race: torch.Tensor
    p_age: torch.Tensor
    p_smiling: torch.Tensor
    p_glasses: torch.Tensor
    p_beard: torch.Tensor
    p_grey: torch.Tensor
    p_colour: torch.Tensor

    def __init__(self, prompt: str | None = None) -> None:
        super().__init__()
        people = P.get(prompt)
        self.prompt = people.text
        self.latent_dim = LATENT_DIM
        for name, table in _tables(people).items():
            self.register_buffer(f"p_{name}", table, persistent=False)
        # The default is the world without prompts: no option recorded, the same digest. Another
        # prompt is recorded, and its digest names its tables, so an artifact trained on it
        # is refused by the default generator (and by the same prompt written differently).
        self.load_options: dict[str, str] = {}
        self.weights_digest = ANALYTIC_DIGEST
        if people.text != P.DEFAULT:
            self.load_options["prompt"] = people.text
            tables = json.dumps([people.gender, people.race]).encode()
            self.weights_digest += "+" + hashlib.sha256(tables).hexdigest()[:16]

    def params(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the renderer's parameters for latents ``z``, discrete factors as weights."""
        entry = {name: z[:, i] for i, name in enumerate(DISCRETE)}
        gender = _soft_one_hot(entry["gender"], _cuts(self.p_gender))
        race = _soft_one_hot(entry["race"], _cuts(self.p_race))
        age = _mixed(entry["age"], race, self.p_age)
        gender_age = (gender[:, :, None] * age[:, None, :]).reshape(len(z), 6)
        grey = _mixed(entry["grey"], age, self.p_grey)
        colour = _mixed(entry["hair"], race, self.p_colour)
        hair = torch.cat([colour * grey[:, :1], grey[:, 1:]], 1)
        out = {
            "gender": gender, "race": race, "age": age,
            "smiling": _mixed(entry["smiling"], age, self.p_smiling),
            "glasses": _mixed(entry["glasses"], age, self.p_glasses),
            "beard": _mixed(entry["beard"], gender_age, self.p_beard),
            "hair": hair,
        }
        offset = len(DISCRETE)
        ranges = {"yaw": R.YAW_RANGE, "pitch": R.PITCH_RANGE, "light": (-math.pi, math.pi)}
        for i, name in enumerate(CONTINUOUS):
            out[name] = _uniform(z[:, offset + i], *ranges.get(name, (-1.0, 1.0)))
        rest = _uniform(z[:, offset + len(CONTINUOUS):], 0.0, 1.0)
        out["background"] = (0.25 + 0.5 * rest[:, :6]).reshape(-1, 2, 3)
        out["shirt"] = 0.1 + 0.8 * rest[:, 6:9]
        out["skin_jitter"] = -0.03 + 0.06 * rest[:, 9:12]
        return out

    def decode(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return portraits in [0, 1], shape (B, 3, 64, 64); ``context`` is ignored."""
        return R.render(self.params(z))

    @torch.no_grad()
    def truth(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return what :meth:`decode` draws: each discrete factor's strongest value, the pose
        (degrees) and the identity factors."""
        params = self.params(z)
        out = {name: params[name].argmax(1) for name in R.ATTRIBUTES}
        out.update({name: params[name] for name in ("yaw", "pitch", *R.IDENTITY)})
        return out


def load(spec=None, *, device: str | torch.device = "cpu", **options) -> PortraitsGenerator:
    """Return the portraits generator (the registry's loader for ``"portraits"``).

    Its one option is ``prompt`` (:mod:`energyql.worlds.portraits.prompts`); any other, or an
    unknown prompt, is a UsageError.
    """
    from energyql.generators.options import check_options

    checked = check_options("world", options, where=getattr(spec, "name", "portraits"),
                            own=(P.OPTION,))
    return PortraitsGenerator(**checked).eval().requires_grad_(False).to(device)
