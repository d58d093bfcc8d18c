"""BigGAN-deep in plain PyTorch, loadable from ``pytorch-pretrained-biggan`` files.

The network (:class:`BigGAN`) keeps the module and parameter names of the
``pytorch-pretrained-biggan`` package (spectral-normalised layers as ``weight_orig`` /
``weight_u`` / ``weight_v``, batch-norm statistics per truncation as ``running_means`` /
``running_vars``), so that package's ``config.json`` + ``pytorch_model.bin`` load with
``load_state_dict(strict=True)``, and it is called the same way: ``net(z, class_vector,
truncation)`` returns images in [-1, 1].

:class:`BigGANGenerator` is the energyql Generator. Its latent is a standard normal vector
``(u_z, u_y)``: ``u_z`` is mapped to the truncated normal noise z (on [-2, 2], times the
truncation) by the inverse CDF, and ``u_y`` to a class embedding y by the Gaussian fitted to
the 1000 class embeddings. With ``class_name=...`` the class is fixed and the latent is u_z only.
See docs/generators.md for why.
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from energyql.errors import (
    CheckpointError,
    UsageError,
    WeightsMissingError,
    did_you_mean,
)
from energyql.generators.base import Generator

__all__ = ["BigGAN", "BigGANConfig", "BigGANGenerator", "deep_layers", "from_folder",
           "imagenet_classes", "load_spec", "truncated_normal"]

WEIGHTS_NAME, CONFIG_NAME = "pytorch_model.bin", "config.json"


def deep_layers(channel_plan: list[tuple[int, int]]) -> list[tuple[bool, int, int]]:
    """Return BigGAN-deep's block list for (in, out) channel multipliers per upsampling stage.

    Each stage is a block at constant width followed by an upsampling block.
    """
    layers = []
    for c_in, c_out in channel_plan:
        layers += [(False, c_in, c_in), (True, c_in, c_out)]
    return layers


@dataclass
class BigGANConfig:
    """The architecture of a BigGAN-deep generator (the fields of the package's config.json).

    ``layers`` lists blocks as (upsamples?, input width, output width) in multiples of
    ``channel_width``; a self-attention layer comes before block ``attention_layer_position``.
    """

    output_dim: int = 128
    z_dim: int = 128
    class_embed_dim: int = 128
    channel_width: int = 128
    num_classes: int = 1000
    layers: list = field(default_factory=lambda: deep_layers(
        [(16, 16), (16, 8), (8, 4), (4, 2), (2, 1)]))
    attention_layer_position: int = 8
    eps: float = 1e-4
    n_stats: int = 51

    @classmethod
    def from_dict(cls, values: dict) -> BigGANConfig:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        config = cls(**known)
        config.layers = [tuple(layer) for layer in config.layers]
        return config

    def to_dict(self) -> dict:
        return asdict(self)


def _sn(module: nn.Module, eps: float) -> nn.Module:
    # torch's own spectral norm: its weight_orig/weight_u/weight_v names are the file format.
    return spectral_norm(module, eps=eps)


class SelfAttention(nn.Module):
    """Non-local block with 2x2 max-pooled keys and values, gated by ``gamma``."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        self.snconv1x1_theta = _sn(nn.Conv2d(channels, channels // 8, 1, bias=False), eps)
        self.snconv1x1_phi = _sn(nn.Conv2d(channels, channels // 8, 1, bias=False), eps)
        self.snconv1x1_g = _sn(nn.Conv2d(channels, channels // 2, 1, bias=False), eps)
        self.snconv1x1_o_conv = _sn(nn.Conv2d(channels // 2, channels, 1, bias=False), eps)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        query = self.snconv1x1_theta(x).flatten(2)                        # (B, C/8, HW)
        key = F.max_pool2d(self.snconv1x1_phi(x), 2).flatten(2)           # (B, C/8, HW/4)
        value = F.max_pool2d(self.snconv1x1_g(x), 2).flatten(2)           # (B, C/2, HW/4)
        attention = torch.softmax(query.transpose(1, 2) @ key, dim=-1)    # (B, HW, HW/4)
        mixed = (value @ attention.transpose(1, 2)).view(batch, channels // 2, height, width)
        return x + self.gamma * self.snconv1x1_o_conv(mixed)


class TruncationBatchNorm(nn.Module):
    """Batch norm with fixed statistics per truncation value, optionally class-conditional.

    The statistics were recorded at ``n_stats`` truncations evenly spaced in [0, 1]; between
    two of them they are blended with the weights the reference package uses.
    """

    running_means: torch.Tensor
    running_vars: torch.Tensor

    def __init__(self, channels: int, condition_dim: int | None, n_stats: int, eps: float):
        super().__init__()
        self.eps = eps
        self.register_buffer("running_means", torch.zeros(n_stats, channels))
        self.register_buffer("running_vars", torch.ones(n_stats, channels))
        self.step = 1.0 / (n_stats - 1)
        self.conditional = condition_dim is not None
        if condition_dim is not None:
            self.scale = _sn(nn.Linear(condition_dim, channels, bias=False), eps)
            self.offset = _sn(nn.Linear(condition_dim, channels, bias=False), eps)
        else:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))

    def statistics(self, truncation: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the (mean, variance) used at ``truncation``."""
        frac, index = math.modf(truncation / self.step)
        index = int(index)
        if frac == 0.0:
            return self.running_means[index], self.running_vars[index]
        # The reference weights the lower entry by the fractional part; kept for exactness.
        mean = self.running_means[index] * frac + self.running_means[index + 1] * (1 - frac)
        var = self.running_vars[index] * frac + self.running_vars[index + 1] * (1 - frac)
        return mean, var

    def forward(self, x: torch.Tensor, truncation: float,
                condition: torch.Tensor | None = None) -> torch.Tensor:
        mean, var = self.statistics(truncation)
        if not self.conditional:
            return F.batch_norm(x, mean, var, self.weight, self.bias, training=False, eps=self.eps)
        gain = 1 + self.scale(condition)[:, :, None, None]
        shift = self.offset(condition)[:, :, None, None]
        return (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps) \
            * gain + shift


class DeepBlock(nn.Module):
    """BigGAN-deep residual block: 1x1 down, two 3x3, 1x1 up; channel-dropping skip."""

    # Set by name in __init__ (the reference checkpoint's keys).
    bn_0: TruncationBatchNorm
    bn_1: TruncationBatchNorm
    bn_2: TruncationBatchNorm
    bn_3: TruncationBatchNorm

    def __init__(self, c_in: int, c_out: int, condition_dim: int, *, upsample: bool,
                 n_stats: int, eps: float, reduction: int = 4):
        super().__init__()
        mid = c_in // reduction
        self.upsample = upsample
        self.drop_channels = c_in != c_out
        for i, channels in enumerate((c_in, mid, mid, mid)):
            setattr(self, f"bn_{i}", TruncationBatchNorm(channels, condition_dim, n_stats, eps))
        self.conv_0 = _sn(nn.Conv2d(c_in, mid, 1), eps)
        self.conv_1 = _sn(nn.Conv2d(mid, mid, 3, padding=1), eps)
        self.conv_2 = _sn(nn.Conv2d(mid, mid, 3, padding=1), eps)
        self.conv_3 = _sn(nn.Conv2d(mid, c_out, 1), eps)

    def forward(self, x: torch.Tensor, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        h = self.conv_0(F.relu(self.bn_0(x, truncation, condition)))
        h = F.relu(self.bn_1(h, truncation, condition))
        if self.upsample:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = self.conv_1(h)
        h = self.conv_2(F.relu(self.bn_2(h, truncation, condition)))
        h = self.conv_3(F.relu(self.bn_3(h, truncation, condition)))
        skip = x[:, :x.shape[1] // 2] if self.drop_channels else x
        if self.upsample:
            skip = F.interpolate(skip, scale_factor=2, mode="nearest")
        return h + skip


class Synthesis(nn.Module):
    """The generator trunk: condition vector (z, y) -> image in [-1, 1]."""

    def __init__(self, config: BigGANConfig):
        super().__init__()
        self.config = config
        ch, eps = config.channel_width, config.eps
        condition_dim = config.z_dim + config.class_embed_dim
        self.gen_z = _sn(nn.Linear(condition_dim, 4 * 4 * 16 * ch), eps)
        layers: list[nn.Module] = []
        for i, (upsample, c_in, c_out) in enumerate(config.layers):
            if i == config.attention_layer_position:
                layers.append(SelfAttention(ch * c_in, eps))
            layers.append(DeepBlock(ch * c_in, ch * c_out, condition_dim, upsample=upsample,
                                    n_stats=config.n_stats, eps=eps))
        self.layers = nn.ModuleList(layers)
        self.bn = TruncationBatchNorm(ch, None, config.n_stats, eps)
        self.conv_to_rgb = _sn(nn.Conv2d(ch, ch, 3, padding=1), eps)

    def forward(self, condition: torch.Tensor, truncation: float) -> torch.Tensor:
        ch = self.config.channel_width
        # The weights come from TensorFlow: the first map is laid out (B, H, W, C).
        x = self.gen_z(condition).view(-1, 4, 4, 16 * ch).permute(0, 3, 1, 2).contiguous()
        for layer in self.layers:
            x = layer(x, condition, truncation) if isinstance(layer, DeepBlock) else layer(x)
        x = self.conv_to_rgb(F.relu(self.bn(x, truncation)))
        return torch.tanh(x[:, :3])


class BigGAN(nn.Module):
    """BigGAN-deep, call- and state-dict-compatible with ``pytorch_pretrained_biggan.BigGAN``.

    Example:
        >>> net = BigGAN(BigGANConfig(channel_width=4)).eval()
        >>> image = net(torch.randn(2, 128).clamp(-2, 2) * 0.4,
        ...             F.one_hot(torch.tensor([1, 2]), 1000).float(), 0.4)   # (2, 3, 128, 128)
    """

    def __init__(self, config: BigGANConfig):
        super().__init__()
        self.config = config
        self.embeddings = nn.Linear(config.num_classes, config.class_embed_dim, bias=False)
        self.generator = Synthesis(config)

    def synthesize(self, z: torch.Tensor, embedding: torch.Tensor,
                   truncation: float) -> torch.Tensor:
        """Return images in [-1, 1] for noise ``z`` and class embeddings ``embedding``."""
        return self.generator(torch.cat([z, embedding], dim=1), truncation)

    def forward(self, z: torch.Tensor, class_vector: torch.Tensor,
                truncation: float) -> torch.Tensor:
        """Return images in [-1, 1] for noise, class vectors (one-hot or mixed) and truncation."""
        if not 0 < truncation <= 1:
            raise UsageError(f"truncation {truncation} is outside (0, 1]",
                             hint="BigGAN's batch-norm statistics exist for 0 < truncation <= 1")
        return self.synthesize(z, self.embeddings(class_vector), truncation)

    @property
    def class_embeddings(self) -> torch.Tensor:
        """Return the embedding of every class, ``(num_classes, class_embed_dim)``."""
        return self.embeddings.weight.t()


# ---------------------------------------------------------------------------------------------
# Files.


def complete_spectral_vectors(state: dict[str, torch.Tensor], eps: float) -> dict:
    """Return ``state`` with each spectral-normalised layer's ``weight_v`` present.

    Files written by PyTorch before 1.1 hold only ``weight_orig`` and ``weight_u``. For those,
    one power-iteration step from the stored u gives v = W^T u / |W^T u| and the updated
    u = W v / |W v|, which is what the reference package computes on its first call (it loads
    such files non-strictly and runs in train mode unless told otherwise).
    """
    state = dict(state)
    for key in [k for k in state if k.endswith(".weight_orig")]:
        stem = key[:-len("_orig")]
        state.pop(stem, None)  # a stored normalised weight is derived data; recomputed here
        if stem + "_v" in state or stem + "_u" not in state:
            continue
        matrix = state[key].reshape(state[key].shape[0], -1)
        v = F.normalize(matrix.t() @ state[stem + "_u"], dim=0, eps=eps)
        state[stem + "_u"] = F.normalize(matrix @ v, dim=0, eps=eps)
        state[stem + "_v"] = v
    return state


def from_folder(folder: str | Path) -> BigGAN:
    """Return the network of a folder with ``config.json`` and ``pytorch_model.bin``."""
    folder = Path(folder).expanduser()
    return from_files(folder / CONFIG_NAME, folder / WEIGHTS_NAME)


def from_files(config_file: Path, weights_file: Path) -> BigGAN:
    """Return the network of a config JSON and a state dict file, in eval mode."""
    for file in (config_file, weights_file):
        if not file.is_file():
            raise WeightsMissingError(
                f"BigGAN file '{file}' not found",
                hint=f"a BigGAN folder holds {CONFIG_NAME} and {WEIGHTS_NAME} as written by "
                     "pytorch-pretrained-biggan")
    try:
        config = BigGANConfig.from_dict(json.loads(config_file.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise CheckpointError(f"'{config_file}' is not a BigGAN config: {error}") from None
    try:
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as error:
        raise CheckpointError(f"cannot read '{weights_file}' as a PyTorch state dict: "
                              f"{type(error).__name__}",
                              hint="loading refuses files that would run pickled code") from None
    net = BigGAN(config)
    try:
        net.load_state_dict(complete_spectral_vectors(state, config.eps), strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"'{weights_file}' does not match the BigGAN-deep layout of "
                              f"'{config_file}': " + str(error).splitlines()[0]) from None
    return net.eval()


# ---------------------------------------------------------------------------------------------
# The energyql Generator.

_TAIL = 2.0  # BigGAN's noise is a standard normal truncated to [-2, 2], then scaled.


def truncated_normal(u: torch.Tensor, truncation: float) -> torch.Tensor:
    """Return ``truncation`` times N(0, 1) truncated to [-2, 2], as a function of u ~ N(0, 1).

    The inverse-CDF map is monotone and differentiable, so a flow over ``u`` keeps a Gaussian
    prior while the generator sees exactly BigGAN's noise distribution.
    """
    low = torch.special.ndtr(torch.tensor(-_TAIL, dtype=u.dtype, device=u.device))
    # Computed on the lower tail and mirrored: Phi(u) rounds to 1 long before Phi(-u) to 0.
    lower = torch.special.ndtri(low + torch.special.ndtr(-u.abs()) * (1 - 2 * low))
    return -truncation * torch.sign(u) * lower


def imagenet_classes() -> tuple[str, ...]:
    """Return the 1000 ImageNet class names in BigGAN's label order."""
    # open_clip (a core dependency) ships the cleaned names; importing it costs nothing extra here.
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


def class_index(name: str | int, num_classes: int = 1000) -> int:
    """Return the label of an ImageNet class given by name (any case) or index."""
    if isinstance(name, int) or (isinstance(name, str) and name.isdigit()):
        index = int(name)
        if not 0 <= index < num_classes:
            raise UsageError(f"class {index} is outside 0..{num_classes - 1}")
        return index
    names = imagenet_classes()
    lowered = [n.lower() for n in names]
    wanted = name.replace("_", " ").strip().lower()
    if wanted not in lowered:
        raise UsageError(f"unknown ImageNet class '{name}'",
                         hint=did_you_mean(wanted, lowered, listing="ImageNet classes"))
    return lowered.index(wanted)


class BigGANGenerator(Generator):
    """A :class:`BigGAN` as an energyql Generator over ``(u_z, u_y) ~ N(0, I)``.

    Arguments:
        net: the network (frozen here).
        truncation: BigGAN's truncation (scales z, selects batch-norm statistics).
        class_name: an ImageNet class (name or index) to fix; then the latent is u_z only.

    Example:
        >>> gen = BigGANGenerator(from_folder("biggan-deep-256"), truncation=0.4)  # doctest: +SKIP
        >>> images = gen.decode(gen.sample_latent(4))                              # doctest: +SKIP
    """

    y_mean: torch.Tensor
    y_chol: torch.Tensor

    def __init__(self, net: BigGAN, *, truncation: float = 0.4, class_name: str | int | None = None,
                 id: str = "biggan", catalog: str = "generic", weights_digest: str = ""):
        super().__init__()
        if not 0 < truncation <= 1:
            raise UsageError(f"truncation {truncation} is outside (0, 1]",
                             hint="BigGAN's batch-norm statistics exist for 0 < truncation <= 1")
        self.net = net.eval().requires_grad_(False)
        config = net.config
        self.truncation = float(truncation)
        self.z_dim, self.y_dim = config.z_dim, config.class_embed_dim
        self.image_size = config.output_dim
        self.id, self.catalog, self.weights_digest = id, catalog, weights_digest
        embeddings = net.class_embeddings.detach().double()
        self.class_label = None if class_name is None else class_index(class_name,
                                                                       config.num_classes)
        self.latent_dim = self.z_dim + (self.y_dim if self.class_label is None else 0)
        # The class prior: the Gaussian of the class embeddings (jittered to stay invertible).
        mean = embeddings.mean(0)
        cov = torch.cov(embeddings.t()) + 1e-6 * torch.eye(self.y_dim, dtype=torch.float64)
        self.register_buffer("y_mean", mean.float())
        self.register_buffer("y_chol", torch.linalg.cholesky(cov).float())
        self.load_options: dict[str, float | int] = {"truncation": self.truncation}
        if self.class_label is not None:  # given exactly when class_name is
            self.load_options["class_name"] = self.class_label

    def split(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return BigGAN's ``(z, class embedding)`` for latents ``(u_z, u_y)``."""
        z = truncated_normal(latent[:, :self.z_dim], self.truncation)
        if self.class_label is not None:
            y = self.net.class_embeddings[self.class_label].to(latent.dtype)
            return z, y.expand(latent.shape[0], -1)
        u_y = latent[:, self.z_dim:]
        return z, self.y_mean.to(latent.dtype) + u_y @ self.y_chol.to(latent.dtype).t()

    def decode(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return images in [0, 1] for latents (``context`` is unused)."""
        noise, embedding = self.split(z)
        image = self.net.synthesize(noise, embedding, self.truncation)
        return ((image + 1) / 2).clamp(0, 1)

    def nearest_class(self, latent: torch.Tensor) -> torch.Tensor:
        """Return the label whose embedding is nearest to each latent's class embedding."""
        _, embedding = self.split(latent)
        return torch.cdist(embedding, self.net.class_embeddings.to(embedding.dtype)).argmin(1)

    def train(self, mode: bool = True):
        # Spectral norm must not run power iterations on frozen weights: keep eval mode.
        super().train(mode)
        self.net.eval()
        return self




def _files(spec) -> tuple[Path, Path]:
    """Return (config, weights) of a registry spec, downloading hub entries when allowed."""
    if spec.path:
        folder = Path(spec.path).expanduser()
        return folder / CONFIG_NAME, folder / WEIGHTS_NAME
    from energyql import hub

    weights = hub.path(spec.weights)
    config_key = spec.weights + "-config"
    config = hub.location(config_key)
    if not config.is_file():
        entry = hub.KNOWN[config_key]
        hint = f"get it with: {hub.fetch_command(config_key)}"
        url = entry.url
        why = hub.why_not_download() if url else "no URL is known"
        if why or not url:
            raise WeightsMissingError(f"BigGAN config '{entry.filename}' is not at {config}; "
                                      f"{why}", hint=hint)
        try:
            # A JSON file: the checkpoint format check does not apply.
            hub.download_file(url, config, sha256=entry.sha256, check_format=False,
                              label=entry.filename)
        except WeightsMissingError as error:
            raise WeightsMissingError(f"BigGAN config '{entry.filename}' could not be "
                                      f"downloaded: {error.message}", hint=hint) from None
    return config, weights


def load_spec(spec, *, device: torch.device | str = "cpu", truncation: float = 0.4,
              class_name: str | int | None = None, **options) -> BigGANGenerator:
    """Build the Generator of a registry spec: hub weights or a ``biggan:FOLDER``.

    Options: ``truncation`` (default 0.4), ``class_name`` (fix one ImageNet class).
    """
    from energyql.generators.options import check_options

    # One table checks every family's options (energyql.generators.options): UsageError.
    given = {"truncation": truncation, **options,
             **({"class_name": class_name} if class_name is not None else {})}
    checked = check_options("biggan", given, where=spec.name)
    truncation = float(checked["truncation"])
    class_name = checked.get("class_name")
    from energyql.io import sha256_file

    config_file, weights_file = _files(spec)
    net = from_files(config_file, weights_file)
    digest = sha256_file(weights_file)
    return BigGANGenerator(net, truncation=truncation, class_name=class_name, id=spec.name,
                           catalog=spec.catalog, weights_digest=digest).to(device)
