"""Tiny random control models saved to local files, as the real loaders expect them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

TINY_CLIP = "energyql-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 24, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def register_tiny_clip(folder: Path) -> str:
    """Register the tiny architecture with open_clip (by config file) and return its name."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{TINY_CLIP}.json"
    config.write_text(json.dumps(TINY_CLIP_CONFIG))
    open_clip.add_model_config(config)
    return TINY_CLIP


def tiny_clip_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights of the tiny CLIP."""
    import open_clip

    torch.manual_seed(seed)
    model = open_clip.CLIP(**TINY_CLIP_CONFIG)
    return {k: v.contiguous() for k, v in model.state_dict().items()}


def save_tiny_clip_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write the tiny CLIP's weights as safetensors (what NAME:PATH loads)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tiny_clip_weights(seed), str(path))
    return path


def save_tiny_clip_dir(folder: Path, seed: int = 0) -> Path:
    """Write a local-dir open_clip model: config plus weights (what local-dir:DIR loads)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_CLIP_CONFIG,
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                           "std": [0.26862954, 0.26130258, 0.27577711]},
    }))
    save_tiny_clip_checkpoint(folder / "open_clip_model.safetensors", seed)
    return folder


def put_in_hf_cache(cache: Path, repo: str, filename: str, data: bytes,
                    commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Place a file in a Hugging Face cache as huggingface_hub lays it out; return its path.

    ``models--ORG--REPO/blobs/<digest>`` holds the bytes, ``snapshots/<commit>/FILE`` links to
    it, and ``refs/main`` names the commit (what a lookup of the ``main`` revision reads).
    """
    import hashlib

    folder = cache / f"models--{repo.replace('/', '--')}"
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    file = folder / "snapshots" / commit / filename
    file.parent.mkdir(parents=True, exist_ok=True)
    file.symlink_to(Path("../..") / "blobs" / blob.name)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(commit)
    return file


def save_random_facenet(path: Path, *, seed: int = 0, with_logits: bool = True) -> Path:
    """Write a random InceptionResnetV1 state dict laid out like facenet-pytorch's releases."""
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(seed)
    net = InceptionResnetV1(pretrained=None, classify=with_logits,
                            num_classes=8 if with_logits else None)
    torch.save(net.state_dict(), path)
    return path


def save_random_fairface(path: Path, *, bias: torch.Tensor | None = None, seed: int = 0) -> Path:
    """Write a random FairFace ResNet-34 state dict (18 outputs); ``bias`` sets the fc bias."""
    from torch import nn
    from torchvision.models import resnet34

    torch.manual_seed(seed)
    net = resnet34(weights=None)
    net.fc = nn.Linear(net.fc.in_features, 18)
    if bias is not None:
        with torch.no_grad():
            net.fc.weight.zero_()
            net.fc.bias.copy_(bias)
    torch.save(net.state_dict(), path)
    return path
