"""The portraits world's prompts: who each caption draws (torch-free).

A text-to-image model asked for "a photo of a doctor" draws mostly men of one group: the
occupational bias the text-to-image fairness work removes. The portraits generator plays that
situation offline: its ``prompt`` option (``--gen-option prompt="a photo of a doctor"``)
selects one of the designed distributions below, and the generator's ground truth says what
it drew, so a de-biasing program is judged on truth.

The design, for the model card:

- A prompt says *who* is drawn: P(gender) and P(race), independent of each other as in the
  default. Every other factor keeps the world's conditional tables (age given race, beard
  given gender and age, hair colour given race, grey hair, smiling and glasses given age;
  :mod:`energyql.worlds.portraits.render`), so a prompt moves the other factors only through
  the people it draws: an occupation in this world is who holds it, not how they look.
- ``"a photo of a person"`` (the default, and what no prompt means) draws the data's
  distribution exactly: the generator, its weights digest and every artifact trained on it
  are those of the world without prompts.
- ``"a photo of a doctor"`` is the most biased (mostly men, mostly the ``alpha`` group),
  ``"a photo of a nurse"`` mostly women, ``"a photo of a teacher"`` exactly balanced in
  gender x race (a prompt a de-biasing program must leave as it is).

Example:
    >>> PROMPTS["a photo of a doctor"].gender
    (0.75, 0.25)
    >>> round(PROMPTS["a photo of a teacher"].kl_to_uniform(), 6)
    0.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from energyql.generators.options import GeneratorOption


@dataclass(frozen=True)
class Prompt:
    """Who one prompt draws.

    Arguments:
        text: the prompt, e.g. ``"a photo of a doctor"``.
        gender: P(gender) over (male, female).
        race: P(race) over (alpha, beta, gamma, delta).
        bias: the bias it stands for, in words (the model card's column).
    """

    text: str
    gender: tuple[float, float]
    race: tuple[float, float, float, float]
    bias: str = ""

    def joint(self) -> list[list[float]]:
        """Return P(gender, race) as rows of gender (male, female), columns of race."""
        return [[g * r for r in self.race] for g in self.gender]

    def kl_to_uniform(self) -> float:
        """Return KL(P(gender, race) || uniform) in nats, from the written tables."""
        cells = [p for row in self.joint() for p in row]
        return sum(p * math.log(p * len(cells)) for p in cells if p > 0)


#: The prompt no prompt means: the data's distribution.
DEFAULT = "a photo of a person"

#: Every designed prompt, in the model card's order.
PROMPTS: dict[str, Prompt] = {p.text: p for p in (
    Prompt(DEFAULT, (0.5, 0.5), (0.45, 0.27, 0.20, 0.08),
           "the data: gender balanced, the groups 45/27/20/8 %"),
    Prompt("a photo of a doctor", (0.75, 0.25), (0.65, 0.20, 0.10, 0.05),
           "mostly men, mostly alpha: women of the delta group are 1.25 % of doctors"),
    Prompt("a photo of a nurse", (0.15, 0.85), (0.35, 0.30, 0.25, 0.10),
           "mostly women, the groups nearer even than the data's"),
    Prompt("a photo of a teacher", (0.5, 0.5), (0.25, 0.25, 0.25, 0.25),
           "balanced: gender x race already uniform"),
)}

#: The generator option that selects a prompt (the portraits spec's own option).
OPTION = GeneratorOption(
    "prompt", "choice", (), choices=tuple(PROMPTS),
    help=f'the caption whose people the portraits are drawn from (default "{DEFAULT}", the '
         "data's distribution); see the model card, docs/worlds/portraits.md")


def get(text: str | None) -> Prompt:
    """Return the prompt ``text`` (None: the default); an unknown one is a UsageError that
    lists the known prompts."""
    return PROMPTS[str(OPTION.check(DEFAULT if text is None else text, "portraits"))]


__all__ = ["DEFAULT", "OPTION", "PROMPTS", "Prompt", "get"]
