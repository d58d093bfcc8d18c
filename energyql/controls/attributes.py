"""Attribute models: images in [0, 1] -> per-attribute log-probabilities over catalog values.

The shapes world ships a trained classifier. Any other world falls back to CLIP zero-shot
classification with a small prompt ensemble per value, which works with any CLIP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from energyql.catalog import CATALOGS, Catalog
from energyql.errors import EnergyQLError


class AttributeModel(nn.Module):
    """Maps images to ``{attribute: log-probabilities (B, K)}`` in catalog value order."""

    catalog: Catalog

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class ClassifierAttributes(AttributeModel):
    """Wraps a classifier that returns ``{attribute: logits}``."""

    def __init__(self, classifier: nn.Module, catalog: Catalog):
        super().__init__()
        self.classifier = classifier.eval().requires_grad_(False)
        self.catalog = catalog

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.classifier(images)
        return {a.name: F.log_softmax(logits[a.name].float(), dim=-1)
                for a in self.catalog.attributes if a.name in logits}


# Prompt ensembles for CLIP zero-shot attributes: templates take the value's label.
_TEMPLATES = {
    "race": ("a photo of a {} person", "a portrait of a {} person"),
    "age": ("a photo of a person aged {}", "a portrait of a person who is {} years old"),
    "gender": ("a photo of a {}", "a portrait of a {}"),
}
_VALUE_WORDS = {"male": "man", "female": "woman"}
# Binary attributes: prompts for "no", then for "yes".
_BINARY_PROMPTS = {
    "smiling": (("a photo of a person with a neutral expression",), ("a photo of a smiling person",)),
    "glasses": (("a photo of a person without glasses",), ("a photo of a person wearing glasses",)),
    "beard": (("a photo of a clean-shaven person",), ("a photo of a person with a beard",)),
    "makeup": (("a photo of a person without makeup",), ("a photo of a person wearing makeup",)),
    "blond_hair": (("a photo of a person with dark hair",), ("a photo of a person with blond hair",)),
}


def _zero_shot_prompts(attribute) -> list[tuple[str, ...]]:
    """Return one tuple of prompts per value of ``attribute``."""
    if attribute.binary:
        words = attribute.name.replace("_", " ")
        no, yes = _BINARY_PROMPTS.get(
            attribute.name, ((f"a photo without {words}",), (f"a photo with {words}",)))
        return [no, yes]
    templates = _TEMPLATES.get(attribute.name, ("a photo of a {}", "an image of a {}"))
    return [tuple(t.format(_VALUE_WORDS.get(v, attribute.label(v))) for t in templates)
            for v in attribute.values]


class ClipZeroShotAttributes(AttributeModel):
    """CLIP zero-shot classification of every catalog attribute (prompt ensembles)."""

    def __init__(self, clip, catalog: Catalog):
        super().__init__()
        self.clip = clip
        self.catalog = catalog
        for attribute in catalog.attributes:
            prompts = _zero_shot_prompts(attribute)
            # Average each value's prompt embeddings (a prompt ensemble), then renormalise.
            class_embeddings = torch.stack(
                [F.normalize(clip.encode_text(list(group)).mean(0), dim=-1) for group in prompts])
            self.register_buffer(f"text_{attribute.name}", class_embeddings, persistent=False)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.clip.encode_image(images)
        scale = self.clip.logit_scale
        return {a.name: F.log_softmax(scale * embedding @ getattr(self, f"text_{a.name}").T, -1)
                for a in self.catalog.attributes}


def load_attribute_model(catalog: Catalog | str, *, device: str = "cpu",
                         clip_spec: str | None = None) -> AttributeModel:
    """Return the attribute model that backs a catalog's attributes."""
    catalog = CATALOGS[catalog] if isinstance(catalog, str) else catalog
    if catalog.name == "shapes":
        from energyql.worlds.shapes import classifier

        return ClassifierAttributes(classifier.load(device=device), catalog).to(device)
    if not catalog.attributes:
        raise EnergyQLError(f"the '{catalog.name}' world has no attributes to classify")
    from energyql.controls.clip import load_clip

    return ClipZeroShotAttributes(load_clip(clip_spec or catalog.clip_model, device), catalog)
