"""Text-to-image latent diffusion (the Stable Diffusion layout) as deterministic generators.

A saved pipeline folder with a CLIP tokenizer and text encoder, a ``UNet2DConditionModel``, an
``AutoencoderKL`` and a scheduler config becomes an energyql
:class:`~energyql.generators.base.Generator` whose latent is the initial noise x_T (4 × H/8 ×
W/8, flattened; prior N(0, I)). The prompt, negative prompt and guidance scale are generator
options: the text is encoded once when the generator is built, and the text encoder is then
let go. ``decode`` runs the DDIM sampler of :mod:`energyql.generators.diffusion` (η = 0, K
steps, each UNet call checkpointed while gradients are on) with classifier-free guidance, one
UNet call per step on the batch ``[x, x]``, and decodes the result with the VAE: the images
equal those of diffusers' ``StableDiffusionPipeline`` with a ``DDIMScheduler`` for the same x_T
(tested to 1e-4 on random pipelines).

Needs ``diffusers`` and ``transformers``: ``pip install 'energyql[diffusion]'``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from energyql.errors import CheckpointError, EnergyQLError, UsageError, WeightsMissingError
from energyql.generators.diffusion import (
    DiffusionGenerator,
    folder_digest,
    index_class,
    pipeline_folder,
    read_model_index,
    require_diffusers,
)

__all__ = ["PARTS", "TextToImageGenerator", "encode_prompt", "load_pipeline_folder", "load_spec",
           "require_transformers"]

#: The sub-folders of a Stable Diffusion pipeline, each named in its ``model_index.json``.
PARTS = ("tokenizer", "text_encoder", "unet", "vae", "scheduler")
#: The classes each part may have (the scheduler's config is read whatever its class).
_CLASSES = {"tokenizer": ("CLIPTokenizer", "CLIPTokenizerFast"),
            "text_encoder": ("CLIPTextModel",),
            "unet": ("UNet2DConditionModel",),
            "vae": ("AutoencoderKL",)}
_LAYOUT = ("a Stable Diffusion pipeline folder holds model_index.json and tokenizer/, "
           "text_encoder/, unet/, vae/ and scheduler/, as StableDiffusionPipeline.save_pretrained "
           "writes it")


def require_transformers():
    """Return the ``transformers`` module, or raise naming the extra that installs it."""
    try:
        import transformers
    except ImportError:
        raise EnergyQLError(
            "text-to-image generators need the 'transformers' package, which is not installed",
            hint="pip install 'energyql[diffusion]'  (or: pip install 'transformers>=4.44')",
        ) from None
    return transformers


def encode_prompt(tokenizer, text_encoder, text: str) -> torch.Tensor:
    """Return the text encoder's last hidden states ``(1, L, D)`` for ``text``.

    Tokenized as diffusers' pipeline does: padded to the tokenizer's ``model_max_length`` L
    and cut there (with a warning naming what was cut); the attention mask is passed only
    when the encoder's config asks for it.
    """
    length = int(tokenizer.model_max_length)
    tokens = tokenizer(text, padding="max_length", max_length=length, truncation=True,
                       return_tensors="pt")
    full = tokenizer(text, padding="longest", return_tensors="pt").input_ids
    if full.shape[-1] > length:
        cut = tokenizer.batch_decode(full[:, length - 1:-1])[0]
        warnings.warn(f"the prompt is cut to the text encoder's {length} tokens (as diffusers "
                      f"cuts it); dropped: {cut!r}", stacklevel=3)
    mask = tokens.attention_mask if getattr(text_encoder.config, "use_attention_mask",
                                            False) else None
    with torch.no_grad():
        return text_encoder(tokens.input_ids, attention_mask=mask)[0].float()


class TextToImageGenerator(DiffusionGenerator):
    """A text-conditioned latent diffusion model decoded by DDIM with classifier-free guidance.

    Arguments:
        unet: a ``diffusers.UNet2DConditionModel`` (frozen here).
        scheduler: any diffusers scheduler; its config gives the noise schedule and spacing.
        vae: the ``AutoencoderKL`` that decodes the latents.
        tokenizer, text_encoder: a CLIP tokenizer and ``transformers.CLIPTextModel``; used
            here to encode the prompts and not kept.
        prompt: the text the images are conditioned on ("" for unconditional samples).
        negative_prompt: the text guidance steers away from (the unconditional branch).
        guidance: the guidance scale g: eps = eps(neg) + g · (eps(prompt) − eps(neg)); at 1 or
            less the prompt alone conditions the UNet, as diffusers does.
        steps: K, the number of DDIM steps.
        height, width: image size in pixels, multiples of 8 (default: the UNet's sample size
            times the VAE's scale factor).
        checkpointing: recompute each UNet call in the backward pass instead of storing it.

    Example:
        >>> gen = TextToImageGenerator(unet, scheduler, vae, tokenizer, text_encoder,
        ...                            prompt="a photo of a doctor", steps=25)  # doctest: +SKIP
        >>> images = gen.decode(gen.sample_latent(2))                          # doctest: +SKIP
    """

    cond: torch.Tensor
    uncond: torch.Tensor

    def __init__(self, unet, scheduler, vae, tokenizer, text_encoder, *, prompt: str = "",
                 negative_prompt: str = "", guidance: float = 7.5, steps: int = 25,
                 height: int | None = None, width: int | None = None,
                 checkpointing: bool = True, id: str = "sd", catalog: str = "generic",
                 weights_digest: str = ""):
        for problem, hint in _unsupported(unet, text_encoder, tokenizer):
            raise CheckpointError(problem, hint=hint)
        scale = 2 ** (len(vae.config.block_out_channels) - 1)
        size = unet.config.sample_size
        default_h, default_w = (size, size) if isinstance(size, int) else tuple(size)
        height = int(height) if height else int(default_h) * scale
        width = int(width) if width else int(default_w) * scale
        for name, value in (("height", height), ("width", width)):
            if value % 8 or value % scale:
                raise UsageError(f"generator option {name}={value} is not a multiple of "
                                 f"{max(8, scale)}", hint="the VAE decodes latents of "
                                 f"1/{scale} the image size; e.g. {name}={value // 8 * 8 or 8}")
        super().__init__(unet, scheduler, steps=steps, vae=vae, checkpointing=checkpointing,
                         sample_size=(height // scale, width // scale), id=id, catalog=catalog,
                         weights_digest=weights_digest)
        self.guidance = float(guidance)
        # diffusers guides only above 1; at 1 and below the prompt alone conditions the UNet.
        self.guided = self.guidance > 1.0
        cond = encode_prompt(tokenizer, text_encoder, prompt)
        uncond = (encode_prompt(tokenizer, text_encoder, negative_prompt) if self.guided
                  else torch.zeros(0))
        self.register_buffer("cond", cond, persistent=False)
        self.register_buffer("uncond", uncond, persistent=False)
        self.load_options = {"prompt": prompt, "negative_prompt": negative_prompt,
                             "guidance": self.guidance, "steps": self.steps,
                             "height": height, "width": width}

    def _model_output(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if not self.guided:
            return self.unet(x, t, encoder_hidden_states=self.cond.repeat(n, 1, 1)).sample
        # One UNet call on [x, x] against [negative, prompt], as the pipeline batches it.
        texts = torch.cat([self.uncond.repeat(n, 1, 1), self.cond.repeat(n, 1, 1)])
        uncond, cond = self.unet(torch.cat([x, x]), t, encoder_hidden_states=texts).sample.chunk(2)
        return uncond + self.guidance * (cond - uncond)


def _unsupported(unet, text_encoder, tokenizer) -> list[tuple[str, str]]:
    """Return ``(problem, hint)`` for each way the parts differ from what decode reproduces."""
    config = unet.config
    problems = []
    if getattr(config, "time_cond_proj_dim", None) is not None:
        problems.append(("UNets with a guidance embedding (time_cond_proj_dim, as in LCM) are "
                         "not supported", "use a Stable Diffusion 1.x/2.x pipeline"))
    if getattr(config, "addition_embed_type", None) is not None:
        problems.append((f"UNets with added conditions ({config.addition_embed_type!r}, as in "
                         "SDXL) are not supported", "use a Stable Diffusion 1.x/2.x pipeline"))
    width = getattr(text_encoder.config, "hidden_size", None)
    if isinstance(config.cross_attention_dim, int) and width != config.cross_attention_dim:
        problems.append((f"the text encoder's width ({width}) is not the UNet's "
                         f"cross_attention_dim ({config.cross_attention_dim})",
                         "the pipeline's text_encoder/ and unet/ come from different models"))
    limit = getattr(text_encoder.config, "max_position_embeddings", None)
    if limit is not None and int(tokenizer.model_max_length) > int(limit):
        problems.append((f"the tokenizer's model_max_length ({tokenizer.model_max_length}) "
                         f"exceeds the text encoder's {limit} positions",
                         "set model_max_length in tokenizer/tokenizer_config.json"))
    return problems


def _check_layout(folder: Path, index: dict) -> None:
    """Raise naming the missing parts, or a part of another kind, of a pipeline folder."""
    unet_class = index_class(index, "unet")
    if unet_class == "UNet2DModel":
        raise CheckpointError(f"pipeline '{folder}' is unconditional (a UNet2DModel)",
                              hint=f"load it as a diffusion generator: diffusers:{folder}")
    unnamed = [part for part in PARTS if index_class(index, part) is None]
    if unnamed:
        raise CheckpointError(f"pipeline '{folder}' is not a Stable Diffusion pipeline: its "
                              f"model_index.json names no {', '.join(unnamed)}", hint=_LAYOUT)
    absent = [f"{part}/" for part in PARTS if not (folder / part).is_dir()]
    if absent:
        raise WeightsMissingError(f"pipeline '{folder}' lacks {', '.join(absent)}",
                                  hint=_LAYOUT + "; fetch or copy the whole folder")
    for part, allowed in _CLASSES.items():
        if index_class(index, part) not in allowed:
            raise CheckpointError(f"pipeline '{folder}' has a {index_class(index, part)} as its "
                                  f"{part}, not a {' or '.join(allowed)}", hint=_LAYOUT)


def _load_part(folder: Path, part: str, load):
    """Return ``load()``, a failure to read the part's files named with the part."""
    try:
        return load()
    except (OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"could not load the {part} of pipeline '{folder}': {first}",
                              hint=_LAYOUT) from None


def load_pipeline_folder(folder: str | Path, *, prompt: str = "", negative_prompt: str = "",
                         guidance: float = 7.5, steps: int = 25, height: int | None = None,
                         width: int | None = None, checkpointing: bool = True,
                         device: torch.device | str = "cpu", id: str = "sd",
                         catalog: str = "generic") -> TextToImageGenerator:
    """Return the Generator of a saved Stable Diffusion pipeline folder (float32).

    Raises :class:`WeightsMissingError` naming a missing ``model_index.json`` or part folder,
    and :class:`CheckpointError` for a pipeline of another kind or a part that will not load.
    """
    diffusers = require_diffusers()
    transformers = require_transformers()
    folder = Path(folder).expanduser()
    index = read_model_index(folder)
    _check_layout(folder, index)
    # Both CLIP tokenizer classes read the same files; a release may ship only one of them.
    tokenizer_class = (getattr(transformers, str(index_class(index, "tokenizer")), None)
                       or transformers.CLIPTokenizer)
    tokenizer = _load_part(folder, "tokenizer",
                           lambda: tokenizer_class.from_pretrained(str(folder / "tokenizer")))
    text_encoder = _load_part(folder, "text_encoder", lambda: transformers.CLIPTextModel
                              .from_pretrained(str(folder / "text_encoder")).float().eval())
    unet = _load_part(folder, "unet", lambda: diffusers.UNet2DConditionModel.from_pretrained(
        folder, subfolder="unet").float())
    vae = _load_part(folder, "vae", lambda: diffusers.AutoencoderKL.from_pretrained(
        folder, subfolder="vae").float())
    scheduler = _load_part(folder, "scheduler", lambda: diffusers.DDIMScheduler.from_pretrained(
        folder, subfolder="scheduler"))
    generator = TextToImageGenerator(
        unet, scheduler, vae, tokenizer, text_encoder, prompt=prompt,
        negative_prompt=negative_prompt, guidance=guidance, steps=steps, height=height,
        width=width, checkpointing=checkpointing, id=id, catalog=catalog,
        weights_digest=folder_digest(folder, parts=("text_encoder", "unet", "vae")))
    return generator.to(device)


def load_spec(spec, *, device: torch.device | str = "cpu", **options) -> TextToImageGenerator:
    """Build the Generator of a registry spec: a Hub entry (``hf:REPO``) or ``sd:PATH``.

    Options: ``prompt`` (default ""), ``negative_prompt`` (default ""), ``guidance`` (default
    7.5), ``steps`` (K DDIM steps, default 25), ``height`` and ``width`` (default: the UNet's),
    ``checkpointing`` (default True).
    """
    from energyql.generators.options import check_options

    defaults = {"prompt": "", "negative_prompt": "", "guidance": 7.5, "steps": 25,
                "checkpointing": True}
    # One table checks every family's options (energyql.generators.options): UsageError.
    checked = check_options("text2image", {**defaults, **options}, where=spec.name)
    return load_pipeline_folder(pipeline_folder(spec), device=device, id=spec.name,
                                catalog=spec.catalog, **checked)
