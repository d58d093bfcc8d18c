"""The identity energy: ``1 − cos(emb(x), emb(x_ref))`` with FaceNet embeddings.

It is 0 for the same face and grows to 2 for opposite embeddings. ``keep(identity)`` uses it as
a *paired* energy: the conditional trainer compares ``G(T(eps, c))`` with ``G(T(eps, c0))``
for the same ``eps`` and hands both batches to :meth:`IdentityEnergy.pair`. Outside that trainer
a fixed reference (one face, or one per image) can be set with :meth:`set_reference`.
"""

from __future__ import annotations

import torch

from energyql.energies.base import EnergyTerm, Features
from energyql.errors import EnergyQLError


class IdentityEnergy(EnergyTerm):
    """``w · (1 − cos(emb(x), emb(x_ref)))`` for a face embedder ``emb``.

    Arguments:
        embedder: maps [0, 1] images to unit embeddings, e.g.
            :func:`energyql.controls.faces.load_facenet`.
        reference: optional reference images ``(1 or B, 3, H, W)``.
        weight: the energy's scale ``w``.
        text: the term's source, for logs.
    """

    def __init__(self, embedder, reference: torch.Tensor | None = None, *, weight: float = 1.0,
                 text: str = "keep(identity)"):
        super().__init__()
        self.embedder = embedder
        self.weight = weight
        self.text = text
        self.register_buffer("reference_embedding", None, persistent=False)
        if reference is not None:
            self.set_reference(reference)

    @torch.no_grad()
    def set_reference(self, images: torch.Tensor) -> None:
        """Embed and keep reference faces: one for every image, or one per image of a batch."""
        self.reference_embedding = self.embedder(images).detach()

    def distance(self, embedding: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        return self.weight * (1 - (embedding * reference).sum(-1))

    def pair(self, images: torch.Tensor, reference_images: torch.Tensor) -> torch.Tensor:
        """Return the energy of each image against its paired reference, ``(B,)``.

        Gradients reach both batches, as both come from the flow in conditional training.
        """
        both = self.embedder(torch.cat([images, reference_images]))
        return self.distance(*both.split(images.shape[0]))

    def forward(self, features: Features) -> torch.Tensor:
        reference = getattr(features, "reference_images", None)
        if reference is not None:
            return self.pair(features.images, reference)
        if self.reference_embedding is None:
            raise EnergyQLError(f"'{self.text}' has no reference face",
                                hint="set one with set_reference(images), or train it with the "
                                     "conditional trainer, which pairs each image with its own")
        embedding = self.embedder(features.images)
        if self.reference_embedding.shape[0] not in (1, embedding.shape[0]):
            raise EnergyQLError(f"'{self.text}': {self.reference_embedding.shape[0]} reference "
                                f"faces for a batch of {embedding.shape[0]}")
        return self.distance(embedding, self.reference_embedding)
