"""The generator registry: names map to specs (plain data, no torch).

A spec says which catalog a generator's world uses and where its loader lives, so that
``energyql check --gen NAME`` resolves names without importing torch or touching weights.
Users can add their own entries with :func:`register`; the embedded worlds' generators come
from their :class:`~energyql.worlds.World` records (an entry registered here wins over a
world's of the same name).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from energyql.errors import UnknownGeneratorError, did_you_mean
from energyql.generators import hf_folders
from energyql.generators.options import GeneratorOption
from energyql.io import is_system_path

#: The generator ``energyql run`` and :func:`energyql.train` use when none is named.
DEFAULT_GENERATOR = "shapes"


@dataclass(frozen=True)
class GeneratorSpec:
    """How to build one named generator.

    Arguments:
        name: registry name, e.g. ``"shapes"`` or ``"stylegan2-ffhq"``.
        catalog: name of the catalog of its world (see :mod:`energyql.catalog`).
        loader: ``"module:function"``; the function takes the spec and keyword options and
            returns a :class:`energyql.generators.base.Generator`.
        weights: key of its weights in the hub table, or None when shipped in the package.
        path: a local checkpoint for path-based entries (``stylegan2:PATH``).
        training: training settings for this generator over its family's
            (:attr:`FAMILY_TRAINING`), as ``(name, value)`` pairs of ``TrainConfig`` fields.
        inherit_training: False when ``training`` alone holds its defaults (a world's own
            generator, measured on its own, inherits no family's).
        options: loader options of this generator's own (an embedded world's, e.g. the
            portraits prompt), beside its family's (:mod:`energyql.generators.options`):
            ``--gen-option`` sets them, the loader checks them, a manifest records them.
    """

    name: str
    catalog: str
    loader: str
    description: str = ""
    weights: str | None = None
    resolution: int = 0
    path: str | None = None
    training: tuple[tuple[str, Any], ...] = ()
    inherit_training: bool = True
    options: tuple[GeneratorOption, ...] = ()

    # Training defaults per generator family (keyed by loader), so that `energyql run` needs no
    # tuning flags. The world's CLIP settings (copies, weight, augmentation) are in its catalog.
    FAMILY_TRAINING: ClassVar[dict[str, dict[str, Any]]] = {
        # PromptGen's StyleGAN2 runs (CLIP, classifier, de-biasing): lr 1e-3, gradient
        # clipping 1.0; neither the warm start nor the forward-KL term has been measured here.
        "energyql.generators.stylegan2:load_spec": {"steps": 2000, "batch": 8, "lr": 1e-3,
                                                     "grad_clip": 1.0},
    }
    # For loaders without an entry (a user's own generator family).
    FALLBACK_LOADER: ClassVar[str] = "energyql.generators.stylegan2:load_spec"

    def training_defaults(self) -> dict[str, Any]:
        """Return this generator's training defaults: its family's (unless it inherits none),
        then its own ``training``."""
        family = (self.FAMILY_TRAINING.get(self.loader, self.FAMILY_TRAINING[self.FALLBACK_LOADER])
                  if self.inherit_training else {})
        return {**family, **dict(self.training)}

    def load(self, **options):
        """Import the loader and build the generator (imports torch)."""
        module_name, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module_name), function)(self, **options)


_REGISTRY: dict[str, GeneratorSpec] = {}
_PATH_SCHEMES: dict[str, GeneratorSpec] = {}


def register(spec: GeneratorSpec, *, scheme: bool = False) -> None:
    """Add a generator; ``scheme=True`` makes ``NAME:PATH`` select a local checkpoint."""
    (_PATH_SCHEMES if scheme else _REGISTRY)[spec.name] = spec


def _table() -> dict[str, GeneratorSpec]:
    """Every named spec: the registered worlds' generators, then (winning) those registered here."""
    from energyql.worlds import registered

    table = {spec.name: spec for world in registered().values() for spec in world.generators}
    table.update(_REGISTRY)
    return table


def names() -> list[str]:
    """Return every registered generator name."""
    return sorted(_table())


def specs() -> list[GeneratorSpec]:
    table = _table()
    return [table[n] for n in sorted(table)]


def own_options(name: str) -> tuple[GeneratorOption, ...]:
    """Return the options the generator registered as ``name`` declares as its own (an
    embedded world's, e.g. the portraits prompt); none for a name not registered."""
    spec = _table().get(name)
    return spec.options if spec is not None else ()


def path_schemes() -> dict[str, GeneratorSpec]:
    """Return the ``NAME:PATH`` schemes by name (their specs have no path yet)."""
    return dict(sorted(_PATH_SCHEMES.items()))


def resolve(name: str) -> GeneratorSpec:
    """Return the spec for a registered name or a ``scheme:PATH`` string."""
    table = _table()
    if name in table:
        return table[name]
    scheme, sep, path = name.partition(":")
    if sep and scheme in _PATH_SCHEMES and path:
        if is_system_path(path):
            raise UnknownGeneratorError(f"generator path '{path}' is a system file, not a "
                                        "checkpoint", hint=f"give {scheme}:PATH to a checkpoint "
                                        "file of your own")
        return replace(_PATH_SCHEMES[scheme], name=name, path=path)
    known = names() + [f"{s}:PATH" for s in sorted(_PATH_SCHEMES)]
    hint = did_you_mean(name, names()) + " known generators: " + ", ".join(known)
    raise UnknownGeneratorError(f"unknown generator '{name}'", hint=hint.strip())


_STYLEGAN2 = "energyql.generators.stylegan2:load_spec"
for _name, _catalog, _res, _what in (
    ("ffhq", "faces", 1024, "StyleGAN2 on FFHQ faces"),
    ("metfaces", "faces", 1024, "StyleGAN2 on MetFaces portraits"),
    ("afhqcat", "generic", 512, "StyleGAN2 on AFHQ cats"),
    ("church", "generic", 256, "StyleGAN2 on LSUN churches"),
    ("car", "generic", 512, "StyleGAN2 on LSUN cars"),
    ("landscape", "generic", 256, "StyleGAN2 on landscapes"),
):
    register(GeneratorSpec(f"stylegan2-{_name}", _catalog, _STYLEGAN2, _what,
                           weights=f"stylegan2-{_name}", resolution=_res))
register(GeneratorSpec("stylegan2", "faces", _STYLEGAN2,
                       "any local StyleGAN2 checkpoint (rosinality .pt or NVIDIA .pkl)"),
         scheme=True)

# Diffusion models through diffusers: x_T decoded by K deterministic DDIM steps. Hub entries are
# pipeline folders fetched into the weights cache (see energyql.generators.hf_folders).
_DIFFUSION = "energyql.generators.diffusion:load_spec"
for _name, _repo, _catalog, _res, _what in (
    ("ddpm-celebahq-256", "google/ddpm-celebahq-256", "generic", 256, "DDPM on CelebA-HQ faces"),
    ("ddpm-church-256", "google/ddpm-church-256", "generic", 256, "DDPM on LSUN churches"),
    ("ddpm-bedroom-256", "google/ddpm-bedroom-256", "generic", 256, "DDPM on LSUN bedrooms"),
    ("ddpm-cat-256", "google/ddpm-cat-256", "generic", 256, "DDPM on LSUN cats"),
    ("ddpm-cifar10-32", "google/ddpm-cifar10-32", "generic", 32, "DDPM on CIFAR-10"),
    ("ldm-celebahq-256", "CompVis/ldm-celebahq-256", "generic", 256,
     "latent diffusion (VQ-VAE) on CelebA-HQ faces"),
):
    register(GeneratorSpec(_name, _catalog, _DIFFUSION, _what + ", DDIM decoding",
                           weights=f"hf:{_repo}", resolution=_res))
register(GeneratorSpec("diffusers", "generic", _DIFFUSION,
                       "any saved unconditional diffusers pipeline folder (UNet2DModel + "
                       "scheduler, optional VQ-VAE/VAE)"), scheme=True)

# Text-to-image latent diffusion (Stable Diffusion layout): x_T decoded by K DDIM steps with
# classifier-free guidance; the prompt is a generator option. The faces catalog, so that FairFace
# judges the people a prompt asks for (CLIP terms serve any prompt). Only the files the loader
# reads are fetched: the repositories also hold full checkpoints and fp16 copies.
_TEXT2IMAGE = "energyql.generators.text2image:load_spec"
_SD_FILES = ("model_index.json", "scheduler/*", "tokenizer/*", "text_encoder/*.json",
             "text_encoder/model.safetensors", "unet/*.json",
             "unet/diffusion_pytorch_model.safetensors", "vae/*.json",
             "vae/diffusion_pytorch_model.safetensors")
for _name, _repo, _what in (
    ("sd-1.4", "CompVis/stable-diffusion-v1-4", "Stable Diffusion 1.4"),
    ("sd-1.5", "stable-diffusion-v1-5/stable-diffusion-v1-5",
     "Stable Diffusion 1.5 (runwayml's release, as mirrored on the Hub)"),
):
    register(GeneratorSpec(_name, "faces", _TEXT2IMAGE, _what + ", text-to-image with DDIM and "
                           "guidance (--gen-option prompt=...)", weights=f"hf:{_repo}",
                           resolution=512))
    hf_folders.register_files(f"hf:{_repo}", _SD_FILES)
register(GeneratorSpec("sd", "faces", _TEXT2IMAGE,
                       "any saved Stable Diffusion pipeline folder (CLIP text encoder, "
                       "UNet2DConditionModel, AutoencoderKL, scheduler)"), scheme=True)

# BigGAN-deep (ImageNet, 1000 classes) in the pytorch-pretrained-biggan layout: each size is a
# state dict and a config JSON, under the package's official file names and URLs. No digests
# are published; the state dict is checked to be a PyTorch file.
def _register_biggan() -> None:
    from energyql import hub

    base = "https://s3.amazonaws.com/models.huggingface.co/biggan/"
    source = "pytorch-pretrained-biggan (Hugging Face), converted from DeepMind's TF Hub models"
    for size in (128, 256, 512):
        key = f"biggan-deep-{size}"
        hub.register(hub.Weights(key, f"{key}-pytorch_model.bin",
                                 f"{base}{key}-pytorch_model.bin", None,
                                 f"BigGAN-deep {size}x{size} generator state dict", source))
        hub.register(hub.Weights(f"{key}-config", f"{key}-config.json",
                                 f"{base}{key}-config.json", None,
                                 f"BigGAN-deep {size}x{size} config", source))
        register(GeneratorSpec(key, "imagenet", "energyql.generators.biggan:load_spec",
                               f"BigGAN-deep on ImageNet, {size}x{size}, latent (z, class)",
                               weights=key, resolution=size))
    register(GeneratorSpec("biggan", "imagenet", "energyql.generators.biggan:load_spec",
                           "any BigGAN-deep folder (config.json + pytorch_model.bin)"),
             scheme=True)


_register_biggan()
