"""Sliders: numbers of an expression that a stage's flow takes as context (issue 24).

A stage with sliders trains one flow ``T(eps, c)`` over settings ``c`` drawn uniformly from the
sliders' ranges; at each setting its target is the exact target of the program with the
sliders at ``c``:

    p(z | c) ∝ p0(z) · exp(-E(G(z); c) + λ(c)·φ(G(z)))

A weight slider multiplies its term by ``c_s`` (:class:`SliderScaledEnergy`). A ``dist``
entry set by a slider moves its constraint's target, so λ depends on ``c``: it is fitted
exactly (moment matching on the stage's base samples) on a regular grid of settings and
interpolated multilinearly between them (:class:`LambdaGrid`).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch

from energyql.energies.base import EnergyTerm, Features
from energyql.energies.combinators import ScaledEnergy
from energyql.energies.conditional import ContextParam
from energyql.lang.structure import MAX_GRID_SLIDERS  # the language refuses more

#: The ``control`` field of a context entry that is a slider (pose parameters name their
#: control instead).
SLIDER = "slider"
#: Grid points per slider for λ(c), by the number of sliders λ depends on (the grid has
#: points ** sliders settings, each one exact moment fit on the same judged samples).
GRID_POINTS = {1: 17, 2: 9, 3: 5}


def grid_points(sliders: int) -> int:
    """Points per axis of the λ grid for ``sliders`` sliders."""
    return GRID_POINTS.get(sliders, 3)


def slider_params(params: Sequence[ContextParam]) -> list[ContextParam]:
    """The context entries that are sliders (pose parameters are not)."""
    return [p for p in params if p.control == SLIDER]


def settings_grid(params: Sequence[ContextParam], points: int) -> torch.Tensor:
    """Return the regular grid of settings ``(points ** S, S)`` over the sliders' ranges, the
    last slider varying fastest (physical units, float64)."""
    axes = [torch.linspace(p.low, p.high, points, dtype=torch.float64) for p in params]
    return torch.tensor(list(itertools.product(*[a.tolist() for a in axes])),
                        dtype=torch.float64).reshape(-1, len(params))


class LambdaGrid(torch.nn.Module):
    """λ of a stage's constraints at a regular grid of slider settings, interpolated.

    ``values[g]`` is the packed λ (every constraint's, in order) fitted for setting
    ``points[g]``: the exact fit. ``offset[g]`` is the feedback training adds on top (what
    the flow's own samples at that setting show; see ``refit_grid_offsets``), as the stages
    without sliders keep an offset beside their exact λ. :meth:`at` interpolates
    multilinearly at any setting inside the ranges: λ as trained, or with ``exact`` the fit
    alone (what evaluation and corrected samplers aim at). ``columns`` says where each slider
    sits in the stage's context vector.
    """

    values: torch.Tensor
    offset: torch.Tensor
    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, params: Sequence[ContextParam], columns: Sequence[int], size: int,
                 points: int | None = None):
        super().__init__()
        self.params = list(params)
        self.columns = list(columns)
        self.points = points or grid_points(len(self.params))
        self.register_buffer("values", torch.zeros(self.points ** len(self.params), size))
        self.register_buffer("offset", torch.zeros(self.points ** len(self.params), size))
        self.exact = False  # at(): the fit alone, without the training offset
        self.register_buffer("low", torch.tensor([p.low for p in self.params]))
        self.register_buffer("high", torch.tensor([p.high for p in self.params]))

    def settings(self) -> torch.Tensor:
        """The grid's settings ``(G, S)``, in the order of ``values``."""
        return settings_grid(self.params, self.points)

    def setting_values(self, context: Sequence[ContextParam]) -> list[dict[str, float]]:
        """Each grid setting as a full setting of the stage's ``context`` entries (those off
        the grid at their middles), in the order of ``values``."""
        middle = {p.name: p.middle for p in context}
        names = [p.name for p in self.params]
        return [{**middle, **dict(zip(names, row))} for row in self.settings().tolist()]

    def at(self, context: torch.Tensor) -> torch.Tensor:
        """Return λ ``(B, size)`` at each row's setting (``context``: the stage's full
        context ``(B, P)`` in physical units)."""
        settings = context[:, self.columns].to(self.values)
        k = self.points
        position = ((settings - self.low) / (self.high - self.low)).clamp(0, 1) * (k - 1)
        lower = position.floor().clamp(max=k - 2).long()
        frac = position - lower
        out = torch.zeros(len(context), self.values.shape[1], dtype=self.values.dtype,
                          device=self.values.device)
        dims = len(self.columns)
        for corner in itertools.product((0, 1), repeat=dims):
            index = torch.zeros(len(context), dtype=torch.long, device=self.values.device)
            weight = torch.ones(len(context), dtype=self.values.dtype,
                                device=self.values.device)
            for d, bit in enumerate(corner):
                index = index * k + lower[:, d] + bit
                weight = weight * (frac[:, d] if bit else 1 - frac[:, d])
            table = self.values if self.exact else self.values + self.offset
            out = out + weight[:, None] * table[index]
        return out

    def to_record(self) -> dict[str, object]:
        """The manifest's record: the sliders, the points per axis and λ at every setting."""
        return {"sliders": [p.name for p in self.params], "points": self.points,
                "lambda": [[round(v, 6) for v in row] for row in self.values.tolist()]}


class SliderScaledEnergy(ScaledEnergy):
    """``w · c_s · E``: a term whose weight is a slider (column ``column`` of the context).

    The energy of one setting without a context is the program at that setting, lowered
    (``Program.at``: the weight becomes a number).
    """

    def __init__(self, weight: float, column: int, term: EnergyTerm, text: str):
        super().__init__(weight, term, text)
        self.column = column

    def forward(self, features: Features) -> torch.Tensor:
        inner: torch.Tensor = self.term(features)
        if features.context is None:
            raise ValueError(f"'{self.text}' needs the slider's value (a context)")
        return self.weight * features.context[:, self.column].to(inner.dtype) * inner


def setting_row(params: Sequence[ContextParam], values: Mapping[str, float]) -> torch.Tensor:
    """The context row ``(P,)`` of one setting (every entry named in ``values``)."""
    return torch.tensor([float(values[p.name]) for p in params])


__all__ = ["GRID_POINTS", "LambdaGrid", "MAX_GRID_SLIDERS", "SLIDER", "SliderScaledEnergy",
           "grid_points", "setting_row", "settings_grid", "slider_params"]
