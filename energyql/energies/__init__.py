"""Energies over generated images: one primitive per module, plus lowering from the graph.

An energy maps a batch of images in [0, 1] to one value per image, ``(B,)``; lower is more
wanted. A stage's target is ``p(z) ∝ p0(z) · exp(-E(G(z)))``.
"""

from energyql.energies.lower import ControlModels, StageEnergy, lower_stage

__all__ = ["ControlModels", "StageEnergy", "lower_stage"]
