"""What the embedded worlds' small CLIPs share: an open_clip config and weights shipped in the
package, their loading, and the contrastive training pieces.

A world describes its CLIP once with :class:`SmallClip`; its ``clip`` module exposes the
instance's methods (``register``, ``normalize``, ``create``, ``load``, ``load_control``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# open_clip's default (OpenAI) normalisation, so that its own preprocessing matches.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class SmallClip:
    """One world's small CLIP: its open_clip model name, config and weights files.

    Arguments:
        name: the open_clip model name (``energyql-<world>-clip``).
        folder: the world's ``weights/`` folder, which holds ``<name>.json`` and
            ``clip.safetensors``.
        image_size: the model's input size in pixels.
        world: the world's name (the control model is registered as ``<world>-clip``).
    """

    name: str
    folder: Path
    image_size: int
    world: str

    @property
    def config(self) -> Path:
        return self.folder / f"{self.name}.json"

    @property
    def weights(self) -> Path:
        return self.folder / "clip.safetensors"

    def register(self) -> None:
        """Add the model config to open_clip's registry (idempotent)."""
        import open_clip

        if self.name not in open_clip.list_models():
            open_clip.add_model_config(self.config)

    def create(self, pretrained: str | Path | None = None) -> Any:
        """Return the open_clip model (random weights unless ``pretrained`` names a file)."""
        import open_clip

        self.register()
        if pretrained is None:
            # open_clip logs a warning for a model without weights; training starts that way.
            logger = logging.getLogger()
            level = logger.level
            logger.setLevel(logging.ERROR)
            try:
                return open_clip.create_model(self.name)
            finally:
                logger.setLevel(level)
        return open_clip.create_model(self.name, pretrained=str(pretrained))

    def load(self, device: str | torch.device = "cpu", *,
             path: str | Path | None = None) -> tuple[Any, Any]:
        """Return ``(model, tokenizer)``: the shipped small CLIP, frozen, in eval mode.

        The checkpoint goes through open_clip's ordinary local-file path.
        """
        import open_clip

        from energyql.errors import WeightsMissingError

        path = Path(path) if path is not None else self.weights
        if not path.is_file():
            raise WeightsMissingError(
                f"weights file '{path}' is missing",
                hint=f"retrain it with `python -m energyql.worlds.{self.world}.train clip`")
        model = self.create(path)
        model.eval().requires_grad_(False)
        return model.to(device), open_clip.get_tokenizer(self.name)

    def load_control(self, augment_options: dict[str, object],
                     device: str | torch.device = "cpu") -> Any:
        """Return the small CLIP as a control model (registry key ``<world>-clip``)."""
        from energyql.controls.clip import ClipModel

        model, tokenizer = self.load(device=device)
        return ClipModel(model, tokenizer, name=f"{self.world}-clip", image_size=self.image_size,
                         mean=MEAN, std=STD, augment_options=augment_options).to(device)


def normalize(images01: torch.Tensor) -> torch.Tensor:
    """Map images in [0, 1] to the small CLIPs' input normalisation."""
    mean = torch.tensor(MEAN, device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=images01.device, dtype=images01.dtype).view(1, 3, 1, 1)
    return (images01 - mean) / std


def contrastive_loss(image_feats: torch.Tensor, text_feats: torch.Tensor, owner: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric loss where several images may share one caption.

    ``text_feats`` holds the batch's distinct captions and ``owner[i]`` the caption of image
    ``i``; an image's positives are its caption, and a caption's positives are all its
    images, so duplicates are never pushed apart as negatives.
    """
    logits = scale * image_feats @ text_feats.T                      # (images, captions)
    image_to_text = F.cross_entropy(logits, owner)
    targets = F.one_hot(owner, text_feats.shape[0]).T.float()        # (captions, images)
    targets = targets / targets.sum(1, keepdim=True)
    text_to_image = -(targets * logits.T.log_softmax(dim=1)).sum(1).mean()
    return 0.5 * (image_to_text + text_to_image)


def contrastive_step(model: Any, optimizer: torch.optim.Optimizer, tokenizer: Any,
                     pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """One training step on normalised images and their captions; return the loss.

    Duplicate captions share one text embedding (see :func:`contrastive_loss`); the logit
    scale is kept in [1, 100], as CLIP does.
    """
    distinct = sorted(set(texts))
    owner = torch.tensor([distinct.index(t) for t in texts])
    image_feats = model.encode_image(pixels, normalize=True)
    text_feats = model.encode_text(tokenizer(distinct), normalize=True)
    loss = contrastive_loss(image_feats, text_feats, owner, model.logit_scale.exp())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss.detach()


def clip_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on embeddings, norms or biases)."""
    named = list(model.named_parameters())
    decay = [p for n, p in named if p.ndim >= 2 and "embedding" not in n]
    other = [p for n, p in named if not (p.ndim >= 2 and "embedding" not in n)]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                              {"params": other, "weight_decay": 0.0}], lr=lr)
