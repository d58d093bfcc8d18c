"""The pieces every energy shares: per-batch features and the term interface."""

from __future__ import annotations

import torch
from torch import nn


class Features:
    """Control-model outputs for one image batch, computed once and shared by every term.

    Arguments:
        images: the batch in [0, 1], ``(B, 3, H, W)``.
        attributes: a callable returning ``{attribute: log-probs (B, K)}`` for images.
        generator: CPU random generator for augmentations (reproducible training).
        context: requested control values of a conditional stage, ``(B, P)``.
        reference_images: the same noise decoded at another context (paired energies).
    """

    def __init__(self, images: torch.Tensor, attributes=None,
                 generator: torch.Generator | None = None, *,
                 context: torch.Tensor | None = None,
                 reference_images: torch.Tensor | None = None):
        self.images = images
        self.generator = generator
        # Conditional stages: the requested control values (physical units), and the images
        # the same noise gives at another context (for paired energies such as keep(identity)).
        self.context = context
        self.reference_images = reference_images
        self._attributes_fn = attributes
        self._attributes: dict[str, torch.Tensor] | None = None

    def attribute_log_probs(self) -> dict[str, torch.Tensor]:
        if self._attributes is None:
            if self._attributes_fn is None:
                raise RuntimeError("no attribute model was given for this world")
            self._attributes = self._attributes_fn(self.images)
        return self._attributes


class EnergyTerm(nn.Module):
    """A term of a stage's energy; ``forward(features) -> (B,)``.

    ``text`` is the term's canonical source, used in progress bars, logs and errors.
    ``flat`` says that the term judges images by class (a classifier's probabilities): its
    gradient through the generator is nearly zero inside a class, so training learns it from
    energy values (the score-function estimator) rather than from its slope.
    """

    text: str = ""
    flat: bool = False

    def forward(self, features: Features) -> torch.Tensor:
        raise NotImplementedError
