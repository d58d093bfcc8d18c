"""StyleGAN2 in plain PyTorch, loadable from rosinality-format checkpoints.

The network (:class:`StyleGAN2`) keeps the parameter and buffer names of the widely used
rosinality ``stylegan2-pytorch`` port, so its checkpoints (``{"g_ema": state_dict,
"latent_avg": tensor}``, the format of PromptGen's ``ffhq.pt`` and friends) load with
``load_state_dict(strict=True)``, and it is called the same way. There are no custom CUDA or
C++ kernels: the FIR filtering that the original does with a fused kernel is a depthwise
convolution here, so the module runs anywhere PyTorch does.

:func:`load_spec` is the registry loader: it wraps the network as an energyql
:class:`~energyql.generators.base.Generator` (``z -> mapping -> truncation -> synthesis``,
noise maps drawn per image or fixed, images in [0, 1]).
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from energyql.errors import CheckpointError, EnergyQLError
from energyql.generators.base import Generator

# Re-exported: these lived here before, and the loaders below use them.
from energyql.generators.checkpoints import read_checkpoint
from energyql.generators.fir import fir_kernel

__all__ = [
    "StyleGAN2", "StyleGAN2Generator", "CheckpointError", "default_channels", "infer_config",
    "from_state_dict", "read_checkpoint", "load", "load_spec", "upfirdn2d",
]

_LRELU_GAIN = math.sqrt(2.0)


# ---------------------------------------------------------------------------------------------
# Building blocks. Attribute names (weight, bias, modulation, blur.kernel, ...) are part of the
# checkpoint format and must not change.


def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1,
              pad: tuple[int, int, int, int] = (0, 0, 0, 0)) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with ``kernel``, then keep every ``down``-th pixel.

    ``pad`` is ``(left, right, top, bottom)``; negative values crop. The kernel is applied as a
    true convolution (flipped), matching the usual definition of upfirdn.
    """
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, (0, up - 1, 0, 0, 0, up - 1))
        x = x.reshape(batch, channels, height * up, width * up)
    x = F.pad(x, pad)
    # Filtering every channel with the same kernel: fold channels into the batch dimension.
    x = x.reshape(batch * channels, 1, x.shape[2], x.shape[3])
    weight = kernel.flip([0, 1]).to(x.dtype)[None, None]
    x = F.conv2d(x, weight)
    x = x.reshape(batch, channels, x.shape[2], x.shape[3])
    if down > 1:
        x = x[:, :, ::down, ::down]
    return x


class FIRFilter(nn.Module):
    """A fixed low-pass filter, optionally upsampling by 2 (its ``kernel`` is a buffer)."""

    kernel: torch.Tensor

    def __init__(self, taps: Sequence[float], pad: tuple[int, int], up: int = 1,
                 gain: float | None = None):
        super().__init__()
        # Zero insertion (or a stride-2 transposed conv) spreads each pixel over up**2
        # positions; the kernel's gain restores the mean.
        self.register_buffer("kernel", fir_kernel(taps, gain=up * up if gain is None else gain))
        self.up = up
        self.pad = (pad[0], pad[1], pad[0], pad[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.kernel, up=self.up, pad=self.pad)


class ScaledLinear(nn.Module):
    """Linear layer with equalised learning rate; optionally a biased leaky ReLU after it."""

    def __init__(self, in_dim: int, out_dim: int, *, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul
        if not self.activate:
            return F.linear(x, self.weight * self.scale, bias)
        return F.leaky_relu(F.linear(x, self.weight * self.scale) + bias, 0.2) * _LRELU_GAIN


class PixelNorm(nn.Module):
    """Normalise each latent to unit mean square."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)


class ModulatedConv(nn.Module):
    """Style-modulated convolution, demodulated by default, optionally upsampling by 2."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, *,
                 demodulate: bool = True, upsample: bool = False,
                 blur_taps: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size,
                                               kernel_size))
        self.modulation = ScaledLinear(style_dim, in_channel, bias_init=1.0)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size ** 2)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            # A stride-2 transposed convolution grows the map by kernel_size - 1 beyond 2x; the
            # blur's padding trims it back to exactly 2x while low-passing.
            excess = len(blur_taps) - 2 - (kernel_size - 1)
            self.blur = FIRFilter(blur_taps, pad=((excess + 1) // 2 + 1, excess // 2 + 1),
                                  gain=4)

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channel, height, width = x.shape
        k = self.kernel_size
        s = self.modulation(style).view(batch, 1, in_channel, 1, 1)
        weight = self.scale * self.weight * s  # (B, out, in, k, k)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.pow(2).sum(dim=[2, 3, 4], keepdim=True) + 1e-8)
        # One grouped convolution applies each sample's own weights.
        x = x.reshape(1, batch * in_channel, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, padding=0, groups=batch)
            out = out.reshape(batch, self.out_channel, out.shape[2], out.shape[3])
            return self.blur(out)
        weight = weight.reshape(batch * self.out_channel, in_channel, k, k)
        out = F.conv2d(x, weight, padding=k // 2, groups=batch)
        return out.reshape(batch, self.out_channel, out.shape[2], out.shape[3])


class NoiseScale(nn.Module):
    """Adds per-pixel noise times a learned strength (``weight``)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            noise = x.new_empty(x.shape[0], 1, x.shape[2], x.shape[3]).normal_()
        return x + self.weight * noise


class BiasLeakyReLU(nn.Module):
    """Per-channel bias, leaky ReLU (slope 0.2) and a sqrt(2) gain."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2) * _LRELU_GAIN


class StyledLayer(nn.Module):
    """Modulated convolution, then noise, then biased activation."""

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, *,
                 upsample: bool = False, blur_taps: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        self.conv = ModulatedConv(in_channel, out_channel, 3, style_dim, upsample=upsample,
                                  blur_taps=blur_taps)
        self.noise = NoiseScale()
        self.activate = BiasLeakyReLU(out_channel)

    def forward(self, x, style, noise=None):
        return self.activate(self.noise(self.conv(x, style), noise))


class RGBLayer(nn.Module):
    """1x1 modulated (not demodulated) convolution to RGB, added to the upsampled skip image."""

    def __init__(self, in_channel: int, style_dim: int, *, upsample: bool = True,
                 blur_taps: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        if upsample:
            excess = len(blur_taps) - 2
            self.upsample = FIRFilter(blur_taps, pad=((excess + 1) // 2 + 1, excess // 2), up=2)
        self.conv = ModulatedConv(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x, style, skip=None):
        out = self.conv(x, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class LearnedConstant(nn.Module):
    """The learned 4x4 input of the synthesis network (parameter ``input``)."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int | torch.Tensor) -> torch.Tensor:
        """Return the constant for a batch size, or for the batch of a tensor (as rosinality)."""
        n = batch if isinstance(batch, int) else batch.shape[0]
        return self.input.expand(n, -1, -1, -1)


# ---------------------------------------------------------------------------------------------
# The network.


def default_channels(channel_multiplier: int = 2) -> dict[int, int]:
    """Return the channel count per resolution of the standard configs (config-f: 2)."""
    m = channel_multiplier
    return {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m,
            512: 32 * m, 1024: 16 * m}


class StyleGAN2(nn.Module):
    """The StyleGAN2 generator, call-compatible with rosinality's ``Generator``.

    Arguments:
        size: output resolution, a power of two >= 4.
        style_dim: size of ``z`` and ``w``.
        n_mlp: number of layers of the mapping network.
        channel_multiplier: 2 for config-f checkpoints (FFHQ, church, car), 1 for smaller ones.
        blur_taps: the 1-D low-pass filter of the resampling layers.
        lr_mlp: learning-rate multiplier the mapping weights were stored with.
        channels: channel count per resolution, overriding the standard table (for NVIDIA
            networks trained with another ``channel_base`` or tiny test networks).

    Example:
        >>> net = StyleGAN2(64, 128, 2, channel_multiplier=1)
        >>> image, _ = net([torch.randn(4, 128)], randomize_noise=False)  # (4, 3, 64, 64)
    """

    # The checkpoint's mean w, set by load(); None for networks built from a state dict.
    latent_avg: torch.Tensor | None = None

    def __init__(self, size: int, style_dim: int, n_mlp: int, channel_multiplier: int = 2,
                 blur_taps: Sequence[float] = (1, 3, 3, 1), lr_mlp: float = 0.01,
                 channels: dict[int, int] | None = None):
        super().__init__()
        if size < 4 or size & (size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {size}")
        self.size = size
        self.style_dim = style_dim
        self.n_mlp = n_mlp
        self.channel_multiplier = channel_multiplier
        self.log_size = int(math.log2(size))
        self.num_layers = (self.log_size - 2) * 2 + 1
        self.n_latent = self.log_size * 2 - 2
        self.channels = dict(channels) if channels else default_channels(channel_multiplier)

        self.style = nn.Sequential(PixelNorm(), *(
            ScaledLinear(style_dim, style_dim, lr_mul=lr_mlp, activate=True)
            for _ in range(n_mlp)))

        c4 = self.channels[4]
        self.input = LearnedConstant(c4)
        self.conv1 = StyledLayer(c4, c4, style_dim, blur_taps=blur_taps)
        self.to_rgb1 = RGBLayer(c4, style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.upsamples = nn.ModuleList()  # always empty; kept because code written for the
        self.to_rgbs = nn.ModuleList()    # original may look the attribute up
        self.noises = nn.Module()  # holder of the fixed noise buffers noise_0 .. noise_{L-1}
        for i in range(self.num_layers):
            res = 2 ** ((i + 5) // 2)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        in_channel = c4
        for log_res in range(3, self.log_size + 1):
            out_channel = self.channels[2 ** log_res]
            self.convs.append(StyledLayer(in_channel, out_channel, style_dim, upsample=True,
                                          blur_taps=blur_taps))
            self.convs.append(StyledLayer(out_channel, out_channel, style_dim,
                                          blur_taps=blur_taps))
            self.to_rgbs.append(RGBLayer(out_channel, style_dim, blur_taps=blur_taps))
            in_channel = out_channel

    @property
    def _device(self) -> torch.device:
        return self.input.input.device

    def make_noise(self) -> list[torch.Tensor]:
        """Return a fresh list of noise maps, one per layer."""
        return [torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), device=self._device)
                for i in range(self.num_layers)]

    def mean_latent(self, n_latent: int) -> torch.Tensor:
        """Return the mean ``w`` of ``n_latent`` random ``z``, shape ``(1, style_dim)``."""
        z = torch.randn(n_latent, self.style_dim, device=self._device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Return the mapping network's ``w`` for ``z``."""
        return self.style(z)

    def synthesize(self, latent: torch.Tensor,
                   noise: Sequence[torch.Tensor | None]) -> torch.Tensor:
        """Return images for per-layer latents ``(B, n_latent, style_dim)`` and noise maps."""
        out = self.conv1(self.input(latent.shape[0]), latent[:, 0], noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for j, to_rgb in enumerate(self.to_rgbs):
            i = 2 * j + 1
            out = self.convs[2 * j](out, latent[:, i], noise[i])
            out = self.convs[2 * j + 1](out, latent[:, i + 1], noise[i + 1])
            skip = to_rgb(out, latent[:, i + 2], skip)
        return skip

    def forward(self, styles: list[torch.Tensor], return_latents: bool = False,
                inject_index: int | None = None, truncation: float = 1,
                truncation_latent: torch.Tensor | None = None, input_is_latent: bool = False,
                noise: Sequence[torch.Tensor | None] | None = None,
                randomize_noise: bool = True):
        """Return ``(image in about [-1, 1], latent or None)``.

        Arguments:
            styles: one or two batches of ``z`` (or ``w`` with ``input_is_latent``); a ``w``
                may also be per-layer, ``(B, n_latent, style_dim)``.
            return_latents: also return the per-layer latent that was used.
            inject_index: with two styles, the layer where the second takes over (random if
                None).
            truncation: applied when below 1, towards ``truncation_latent``.
            noise: per-layer noise maps; if None, fresh random noise (``randomize_noise``) or
                the fixed ``noises.noise_i`` buffers.
        """
        if not input_is_latent:
            styles = [self.style(s) for s in styles]
        if noise is None:
            noise = ([None] * self.num_layers if randomize_noise else
                     [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)])
        if truncation < 1:
            if truncation_latent is None:
                raise ValueError("truncation < 1 needs truncation_latent (the mean w)")
            mean = truncation_latent
            styles = [mean + truncation * (s - mean) for s in styles]

        if len(styles) < 2:
            first = styles[0]
            latent = first if first.ndim == 3 else first.unsqueeze(1).repeat(1, self.n_latent, 1)
        else:
            if inject_index is None:
                inject_index = random.randint(1, self.n_latent - 1)
            latent = torch.cat([
                styles[0].unsqueeze(1).repeat(1, inject_index, 1),
                styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1),
            ], dim=1)

        image = self.synthesize(latent, noise)
        return image, (latent if return_latents else None)


# ---------------------------------------------------------------------------------------------
# Checkpoints.

_STYLE_KEY = re.compile(r"style\.(\d+)\.weight")
_RGB_KEY = re.compile(r"to_rgbs\.(\d+)\.conv\.weight")


def infer_config(state_dict: dict[str, torch.Tensor]) -> dict:
    """Return the :class:`StyleGAN2` constructor arguments that fit ``state_dict``.

    Raises :class:`CheckpointError` when the dictionary is not a StyleGAN2 generator.
    """
    needed = ("input.input", "conv1.conv.weight", "conv1.conv.modulation.weight")
    missing = [k for k in needed if k not in state_dict]
    if missing:
        raise CheckpointError(
            "not a StyleGAN2 generator state dict (missing " + ", ".join(missing) + ")",
            hint="expected the rosinality format: a dict with 'g_ema' holding the generator")
    n_mlp = sum(1 for k in state_dict if _STYLE_KEY.fullmatch(k))
    style_dim = state_dict["conv1.conv.modulation.weight"].shape[1]
    n_rgb = sum(1 for k in state_dict if _RGB_KEY.fullmatch(k))
    size = 2 ** (n_rgb + 2)
    channels = {4: state_dict["input.input"].shape[1]}
    for j in range(n_rgb):
        channels[2 ** (j + 3)] = state_dict[f"convs.{2 * j}.conv.weight"].shape[1]
    multiplier = max(1, channels.get(64, 512) // 256)
    standard = default_channels(multiplier)
    config = {"size": size, "style_dim": style_dim, "n_mlp": n_mlp,
              "channel_multiplier": multiplier}
    if any(standard[r] != c for r, c in channels.items()):
        config["channels"] = channels
    return config


def from_state_dict(state_dict: dict[str, torch.Tensor], *, lr_mlp: float = 0.01) -> StyleGAN2:
    """Build a :class:`StyleGAN2` shaped by ``state_dict`` and load it strictly."""
    net = StyleGAN2(**infer_config(state_dict), lr_mlp=lr_mlp)
    try:
        net.load_state_dict(state_dict, strict=True)
    except RuntimeError as error:
        raise CheckpointError("the checkpoint does not match the StyleGAN2 layout: "
                              + str(error).splitlines()[0]) from None
    return net


def load(path: str | Path, *, device: torch.device | str = "cpu") -> StyleGAN2:
    """Return the generator of a rosinality ``.pt`` (or NVIDIA ``.pkl``) checkpoint, in eval mode.

    The checkpoint's ``latent_avg`` (or None) is kept as the attribute ``latent_avg``.
    """
    state, latent_avg = read_checkpoint(path)
    net = from_state_dict(state).to(device).eval()
    net.latent_avg = None if latent_avg is None else latent_avg.to(device)
    return net


# ---------------------------------------------------------------------------------------------
# The energyql Generator adapter and the registry loader.


class StyleGAN2Generator(Generator):
    """A :class:`StyleGAN2` as an energyql Generator: ``z ~ N(0, I) -> w -> image in [0, 1]``.

    Arguments:
        net: the network (frozen here).
        truncation: psi of the truncation trick towards ``w_avg`` (1.0 = none; PromptGen trains
            at 1.0 and samples at 0.7).
        w_avg: the mean ``w``; if None it is estimated from ``mean_samples`` seeded draws.
        randomize_noise: draw noise maps per image instead of using the fixed buffers (the
            ``noise`` option: ``random`` or ``fixed``). The draws are seeded by the latents, so
            the same ``z`` always gives the same image and seeded sampling stays reproducible.

    Example:
        >>> gen = StyleGAN2Generator(load("ffhq.pt"), truncation=0.7)      # doctest: +SKIP
        >>> images = gen.decode(gen.sample_latent(4))                         # doctest: +SKIP
    """

    w_avg: torch.Tensor

    def __init__(self, net: StyleGAN2, *, truncation: float = 1.0,
                 w_avg: torch.Tensor | None = None, mean_samples: int = 4096,
                 randomize_noise: bool = False, id: str = "stylegan2", catalog: str = "generic",
                 weights_digest: str = ""):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.latent_dim = net.style_dim
        self.image_size = net.size
        self.truncation = float(truncation)
        self.randomize_noise = randomize_noise
        self.id, self.catalog, self.weights_digest = id, catalog, weights_digest
        if w_avg is None:
            # Seeded, so that the same weights always give the same truncation centre.
            seeded = torch.Generator(device="cpu").manual_seed(0)
            z = torch.randn(mean_samples, net.style_dim, generator=seeded)
            with torch.no_grad():
                w_avg = net.get_latent(z.to(net._device)).mean(0)
        self.register_buffer("w_avg", w_avg.detach().reshape(1, net.style_dim).float())

    def decode(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return images in [0, 1] for latents ``z`` (``context`` is unused)."""
        w = self.net.get_latent(z)
        if self.truncation != 1.0:
            w = self.w_avg + self.truncation * (w - self.w_avg)
        noise = self.noise_maps(z) if self.randomize_noise else None
        image, _ = self.net([w], input_is_latent=True, noise=noise, randomize_noise=False)
        return ((image + 1) / 2).clamp(0, 1)

    def noise_maps(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Return one random noise map per layer and image, drawn from a seed that ``z`` fixes.

        Seeding by the latents (not by torch's global random state) keeps every call on the same
        ``z`` identical: a seeded sample, a resumed run and a reloaded artifact see the same noise.
        """
        import hashlib

        digest = hashlib.blake2b(z.detach().float().cpu().numpy().tobytes(), digest_size=8)
        seeded = torch.Generator(device=z.device).manual_seed(
            int.from_bytes(digest.digest(), "little") & (2 ** 63 - 1))
        shapes = [getattr(self.net.noises, f"noise_{i}").shape[-2:]
                  for i in range(self.net.num_layers)]
        return [torch.randn(z.shape[0], 1, *shape, generator=seeded, device=z.device)
                for shape in shapes]

    def train(self, mode: bool = True):
        # The wrapped network stays in eval mode; training flows around it never changes it.
        super().train(mode)
        self.net.eval()
        return self


NOISE_MODES = ("random", "fixed")
# PromptGen trains its CLIP, classifier and de-biasing runs with fresh noise maps per image.
DEFAULT_NOISE = "random"


def noise_mode(options: dict) -> str:
    """Return ``random`` or ``fixed`` from the ``noise`` option (or older ``randomize_noise``)."""
    from energyql.errors import check_choice

    if "noise" in options:
        return check_choice(str(options["noise"]), NOISE_MODES, what="StyleGAN2 noise mode",
                            error=EnergyQLError)
    if "randomize_noise" in options:
        return "random" if options["randomize_noise"] else "fixed"
    return DEFAULT_NOISE


def load_spec(spec, *, device: torch.device | str = "cpu", truncation: float = 1.0,
              **options) -> StyleGAN2Generator:
    """Build the Generator of a registry spec: hub weights (``spec.weights``) or ``spec.path``.

    Options: ``truncation`` (psi, default 1.0), ``mean_samples`` (draws for ``w_avg`` when the
    checkpoint has no ``latent_avg``), ``noise`` (``random``, the default as in PromptGen: fresh
    noise maps per image; ``fixed``: the checkpoint's noise buffers).
    """
    from energyql.generators.options import check_options

    # One table checks every family's options (energyql.generators.options): UsageError.
    checked = check_options("stylegan2", {"truncation": truncation, **options}, where=spec.name)
    truncation, options = float(checked.pop("truncation")), checked
    from energyql import hub
    from energyql.io import sha256_file

    if spec.path:
        path = Path(spec.path).expanduser()
        digest = None
    elif spec.weights:
        path = hub.path(spec.weights)
        digest = hub.KNOWN[spec.weights].sha256 if spec.weights in hub.KNOWN else None
    else:
        raise CheckpointError(f"generator '{spec.name}' names neither weights nor a path")
    state, latent_avg = read_checkpoint(path)
    net = from_state_dict(state).to(device)
    return StyleGAN2Generator(
        net, truncation=truncation, w_avg=None if latent_avg is None else latent_avg.to(device),
        mean_samples=options.get("mean_samples", 4096),
        randomize_noise=noise_mode(options) == "random", id=spec.name,
        catalog=spec.catalog, weights_digest=digest or sha256_file(path),
    ).to(device)
