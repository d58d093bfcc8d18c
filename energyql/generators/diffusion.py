"""Diffusion models from ``diffusers`` as deterministic generators: x_T -> DDIM (eta = 0) -> image.

Any unconditional ``UNet2DModel`` with a scheduler (and, for latent diffusion, a VAE or VQ-VAE
decoder) becomes an energyql :class:`~energyql.generators.base.Generator`: the latent is the
initial noise x_T flattened to ``latent_dim = C * H * W`` with the prior N(0, I), and
``decode`` runs K deterministic DDIM steps written here (the scheduler only supplies its
noise schedule and conventions), so the image is a differentiable function of x_T. Each UNet
call is gradient-checkpointed while gradients are on, so backpropagating through K steps keeps
one step's activations at a time, not K.

Text-to-image pipelines (Stable Diffusion) reuse this sampler with a text-conditioned UNet and
classifier-free guidance: :mod:`energyql.generators.text2image`.

``diffusers`` is an optional dependency: ``pip install 'energyql[diffusion]'``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from energyql.errors import (
    CheckpointError,
    EnergyQLError,
    UsageError,
    WeightsMissingError,
)
from energyql.generators import hf_folders
from energyql.generators.base import Generator

__all__ = ["DiffusionGenerator", "ddim_timesteps", "folder_digest", "index_class",
           "load_pipeline_folder", "load_spec", "pipeline_folder", "read_model_index",
           "require_diffusers"]

_PREDICTIONS = ("epsilon", "sample", "v_prediction")


def require_diffusers():
    """Return the ``diffusers`` module, or raise naming the extra that installs it."""
    try:
        import diffusers
    except ImportError:
        raise EnergyQLError(
            "diffusion generators need the 'diffusers' package, which is not installed",
            hint="pip install 'energyql[diffusion]'  (or: pip install 'diffusers>=0.30')",
        ) from None
    return diffusers


def ddim_timesteps(config, steps: int) -> list[tuple[int, int]]:
    """Return the ``(t, t_prev)`` pairs of a K-step DDIM pass for a scheduler config.

    ``t_prev < 0`` marks the last step (its alpha is the scheduler's final alpha). The spacing
    follows the config's ``timestep_spacing`` ("leading", "trailing" or "linspace"), as diffusers
    does, so the same K visits the same timesteps.
    """
    total = int(config.get("num_train_timesteps", 1000))
    if not 1 <= steps <= total:
        raise UsageError(f"steps={steps} is outside 1..{total}",
                         hint=f"this model was trained with {total} diffusion timesteps")
    spacing = config.get("timestep_spacing", "leading")
    if spacing == "leading":
        ratio = total // steps
        ts = [i * ratio + int(config.get("steps_offset", 0)) for i in range(steps)][::-1]
    elif spacing == "trailing":
        stride = total / steps
        ts = [round(total - i * stride) - 1 for i in range(steps)]
    elif spacing == "linspace":
        ts = [round(i * (total - 1) / (steps - 1)) if steps > 1 else 0
              for i in range(steps)][::-1]
    else:
        raise CheckpointError(f"scheduler timestep_spacing '{spacing}' is not supported",
                              hint="use 'leading', 'trailing' or 'linspace'")
    # diffusers steps back by a fixed stride, whatever the spacing.
    return [(t, t - total // steps) for t in ts]


class DiffusionGenerator(Generator):
    """An unconditional diffusion model decoded by deterministic DDIM as an energyql Generator.

    Arguments:
        unet: a ``diffusers.UNet2DModel`` (frozen here).
        scheduler: any diffusers scheduler; its config gives the noise schedule.
        steps: K, the number of DDIM steps of ``decode``.
        vae: a latent-diffusion decoder (``VQModel`` or ``AutoencoderKL``) or None.
        checkpointing: recompute each UNet call in the backward pass instead of storing it.
        sample_size: ``(H, W)`` of x_T when it differs from the UNet's ``sample_size`` (a
            text-to-image pipeline asked for another image size).

    Example:
        >>> gen = DiffusionGenerator(unet, scheduler, steps=25)             # doctest: +SKIP
        >>> images = gen.decode(gen.sample_latent(2))                       # doctest: +SKIP
    """

    alphas_cumprod: torch.Tensor
    final_alpha: torch.Tensor

    def __init__(self, unet, scheduler, *, steps: int = 50, vae=None, checkpointing: bool = True,
                 sample_size: tuple[int, int] | None = None, id: str = "diffusers",
                 catalog: str = "generic", weights_digest: str = ""):
        super().__init__()
        diffusers = require_diffusers()
        ddim = diffusers.DDIMScheduler.from_config(dict(scheduler.config))
        config = dict(ddim.config)
        if config.get("thresholding"):
            raise CheckpointError("schedulers with dynamic thresholding are not supported",
                                  hint="save the pipeline with thresholding=False")
        self.prediction = config.get("prediction_type", "epsilon")
        if self.prediction not in _PREDICTIONS:
            raise CheckpointError(f"prediction type '{self.prediction}' is not supported",
                                  hint="supported: " + ", ".join(_PREDICTIONS))
        self.unet = unet.eval().requires_grad_(False)
        self.vae = None if vae is None else vae.eval().requires_grad_(False)
        self.steps = int(steps)
        self.schedule = ddim_timesteps(config, self.steps)
        self.clip_range = float(config["clip_sample_range"]) if config.get("clip_sample") else None
        # The schedule in float32, as diffusers keeps it; cast per step to the sample's dtype.
        self.register_buffer("alphas_cumprod", ddim.alphas_cumprod.float().clone())
        self.register_buffer("final_alpha", ddim.final_alpha_cumprod.float().clone().reshape(()))
        # x_T ~ N(0, I) times the scheduler's initial sigma, as pipelines draw it (1 for DDIM).
        self.init_sigma = float(ddim.init_noise_sigma)
        self.checkpointing = checkpointing
        shape = unet.config.sample_size if sample_size is None else sample_size
        height, width = (shape, shape) if isinstance(shape, int) else tuple(shape)
        self.sample_shape = (int(unet.config.in_channels), int(height), int(width))
        self.latent_dim = self.sample_shape[0] * height * width
        self.latent_shape = self.sample_shape  # image-shaped: flows over it are convolutional
        self.scaling = float(getattr(vae.config, "scaling_factor", 1.0) or 1.0) if vae else 1.0
        self.vae_scale = 2 ** (len(vae.config.block_out_channels) - 1) if vae else 1
        self.image_size = max(height, width) * self.vae_scale
        self.id, self.catalog, self.weights_digest = id, catalog, weights_digest
        # The options that shaped it, as a manifest records them.
        self.load_options: dict[str, Any] = {"steps": self.steps}

    def _model_output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = self.unet(x, t).sample
        # Models that also learn the variance put it in the second half of the channels.
        return out[:, :x.shape[1]] if out.shape[1] == 2 * x.shape[1] else out

    def ddim_step(self, x: torch.Tensor, t: int, t_prev: int) -> torch.Tensor:
        """Return x_{t_prev} from x_t by one deterministic DDIM update (eta = 0)."""
        timestep = torch.tensor(t, device=x.device)
        if self.checkpointing and torch.is_grad_enabled():
            out = checkpoint(self._model_output, x, timestep, use_reentrant=False)
        else:
            out = self._model_output(x, timestep)
        a_t = self.alphas_cumprod[t].to(x.dtype)
        a_prev = (self.alphas_cumprod[t_prev] if t_prev >= 0 else self.final_alpha).to(x.dtype)
        if self.prediction == "epsilon":
            x0, eps = (x - (1 - a_t).sqrt() * out) / a_t.sqrt(), out
        elif self.prediction == "sample":
            x0, eps = out, (x - a_t.sqrt() * out) / (1 - a_t).sqrt()
        else:  # v_prediction
            x0 = a_t.sqrt() * x - (1 - a_t).sqrt() * out
            eps = a_t.sqrt() * out + (1 - a_t).sqrt() * x
        if self.clip_range is not None:
            # As diffusers: x0 is clipped, the noise estimate is the model's own.
            x0 = x0.clamp(-self.clip_range, self.clip_range)
        return a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps

    def denoise(self, x_t: torch.Tensor) -> torch.Tensor:
        """Return x_0 (about [-1, 1], or VAE latents) from x_T ``(B, C, H, W)`` drawn N(0, I)."""
        x = x_t * self.init_sigma
        for t, t_prev in self.schedule:
            x = self.ddim_step(x, t, t_prev)
        return x

    def decode(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return images in [0, 1] for flattened initial noises ``z`` (``context`` is unused)."""
        x = self.denoise(z.reshape(z.shape[0], *self.sample_shape))
        if self.vae is not None:
            x = self.vae.decode(x / self.scaling).sample
        return (x / 2 + 0.5).clamp(0, 1)

    def train(self, mode: bool = True):
        # The wrapped networks stay in eval mode; flows trained around them never change them.
        super().train(mode)
        self.unet.eval()
        if self.vae is not None:
            self.vae.eval()
        return self


# ---------------------------------------------------------------------------------------------
# Pipeline folders (``save_pretrained`` layout) and the registry loader.

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def folder_digest(folder: Path, parts: tuple[str, ...] | None = None) -> str:
    """Return one sha256 over the weight files of a pipeline folder (names and bytes).

    ``parts`` (sub-folder names) limits it to the files those parts load: in each, the weights
    without a variant (``model.safetensors``, not ``model.fp16.safetensors``), safetensors where
    there are any, as diffusers and transformers choose them. None digests every weight file.
    """
    from energyql.io import sha256_file

    if parts is None:
        files = sorted(p for p in folder.rglob("*") if p.suffix in _WEIGHT_SUFFIXES)
    else:
        files = []
        for part in parts:
            plain = [p for p in sorted((folder / part).glob("*"))
                     if p.suffix in _WEIGHT_SUFFIXES and "." not in p.stem]
            safe = [p for p in plain if p.suffix == ".safetensors"]
            files += safe or plain
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(folder)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def read_model_index(folder: str | Path) -> dict:
    """Return the parsed ``model_index.json`` of a saved pipeline folder.

    Raises :class:`WeightsMissingError` when the folder has none (not a pipeline, or not here).
    """
    folder = Path(folder).expanduser()
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        raise WeightsMissingError(
            f"'{folder}' is not a saved diffusers pipeline (no model_index.json)",
            hint="pass the folder written by pipeline.save_pretrained(...) or fetched with "
                 "`hf download REPO_ID --local-dir FOLDER`")
    try:
        index = json.loads(index_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"'{index_file}' is not valid JSON ({error})") from None
    if not isinstance(index, dict):
        raise CheckpointError(f"'{index_file}' holds no JSON object")
    return index


def index_class(index: dict, part: str) -> str | None:
    """Return the class a ``model_index.json`` names for a part (None: no such part)."""
    entry = index.get(part)
    if isinstance(entry, list) and len(entry) == 2:
        return entry[1] if isinstance(entry[1], str) else None
    return None


def pipeline_folder(spec) -> Path:
    """Return the pipeline folder of a registry spec: its local path or its Hub folder."""
    if spec.path:
        return Path(spec.path).expanduser()
    if spec.weights and spec.weights.startswith(hf_folders.PREFIX):
        return hf_folders.fetch(spec.weights)
    raise CheckpointError(f"generator '{spec.name}' names neither a Hub repo nor a path")


def load_pipeline_folder(folder: str | Path, *, steps: int = 50, checkpointing: bool = True,
                         device: torch.device | str = "cpu", id: str = "diffusers",
                         catalog: str = "generic") -> DiffusionGenerator:
    """Return the Generator of a saved diffusers pipeline folder (``model_index.json`` + parts)."""
    diffusers = require_diffusers()
    folder = Path(folder).expanduser()
    index = read_model_index(folder)
    for part in ("unet", "scheduler"):
        if part not in index:
            raise CheckpointError(f"pipeline '{folder}' has no '{part}'",
                                  hint="energyql needs an unconditional UNet2DModel pipeline "
                                       "(DDPM, DDIM, or LDM with a VQ-VAE/VAE)")
    unet_class = index["unet"][1] if isinstance(index["unet"], list) else "UNet2DModel"
    if unet_class == "UNet2DConditionModel" and index_class(index, "text_encoder"):
        raise CheckpointError(f"pipeline '{folder}' is text-conditioned (a {unet_class})",
                              hint=f"load it as a text-to-image generator: sd:{folder}")
    if unet_class != "UNet2DModel":
        raise CheckpointError(f"pipeline '{folder}' has a {unet_class}, not a UNet2DModel",
                              hint="diffusers:PATH takes unconditional pipelines; sd:PATH takes "
                                   "Stable Diffusion ones")
    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet")
    scheduler = diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    vae = None
    for part in ("vqvae", "vae"):
        if part in index and index[part][0] is not None:
            vae = getattr(diffusers, index[part][1]).from_pretrained(folder, subfolder=part)
    return DiffusionGenerator(unet, scheduler, steps=steps, vae=vae, checkpointing=checkpointing,
                              id=id, catalog=catalog,
                              weights_digest=folder_digest(folder)).to(device)


def load_spec(spec, *, device: torch.device | str = "cpu", steps: int = 50,
              checkpointing: bool = True, **options) -> DiffusionGenerator:
    """Build the Generator of a registry spec: a Hub entry (``hf:REPO``) or ``diffusers:PATH``.

    Options: ``steps`` (K DDIM steps, default 50), ``checkpointing`` (default True).
    """
    from energyql.generators.options import check_options

    # One table checks every family's options (energyql.generators.options): UsageError.
    checked = check_options("diffusion", {"steps": steps, "checkpointing": checkpointing,
                                          **options}, where=spec.name)
    steps, checkpointing = int(checked["steps"]), bool(checked["checkpointing"])
    return load_pipeline_folder(pipeline_folder(spec), steps=steps, checkpointing=checkpointing,
                                device=device, id=spec.name, catalog=spec.catalog)
