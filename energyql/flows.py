"""Latent flows: invertible maps ``eps -> z`` from N(0, I) to a generator's latent space.

Three kinds, all starting at the identity:

``spline`` (the embedded worlds' default, ``coupling="spline"``) stacks rational-quadratic
spline couplings (neural spline flows, Durkan et al. 2019; energyql.splines), each bending a
random half of the entries. A spline bends a coordinate where an affine coupling can only shift and
scale it, which is what a target with a judge's sharp class edges needs: on the shapes world
it reached red circles in 9,792 images with size drift 0.026, where the affine flow took
17,792 and drifted 0.047 (docs/training.md).

``dense`` (the default for other generators, ``coupling="affine"``) is PromptGen's choice: a
stack of Glow-style blocks, each an affine coupling with a learned global affine scale and a
fixed random rotation ("soft permutation"), built from FrEIA's ``AllInOneBlock`` on the flat
latent. Per flow step it is 2.9-3.2 times faster than the spline flow (docs/benchmarks.md).
Its rotations are ``dim x dim`` matrices, so it suits latents of up to a few thousand
entries.

``conv`` is a multiscale convolutional flow for image-shaped latents ``(C, H, W)`` (a diffusion
model's initial noise), the RealNVP/Glow family: at each scale a Haar squeeze, then blocks
of actnorm (the block's global affine), a fixed invertible 1x1 convolution (a random channel
rotation) and an affine coupling whose subnet is convolutional; half the channels are factored
out after every scale but the last. Its parameters and cost per sample grow with the number
of pixels, not its square (docs/scaling.md). A context (pose, sliders) enters every subnet as
extra constant channels.

The last layer of every coupling network starts at zero, so at step 0 each flow is a product
of rotations and permutations (the spline's splines are the identity): it maps N(0, I) onto
N(0, I) exactly, and the stage samples its base distribution.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

import FrEIA.framework as ff
import FrEIA.modules as fm
import numpy as np
import torch
from torch import nn

# The most Fourier features per context entry (FlowConfig.frequencies): the manifest's bound.
from energyql.manifest import FLOW_KINDS, MAX_FREQUENCIES
from energyql.splines import SplineINN

#: Flat kinds (a vector latent): FrEIA's affine blocks and spline couplings (energyql.splines).
FLAT_KINDS = ("dense", "spline")
#: The most squeezes a conv flow takes (each halves the sides and quadruples the channels).
MAX_LEVELS = 6


@dataclass(frozen=True)
class FlowConfig:
    """Shape of a latent flow; stored in the artifact manifest to rebuild it.

    Arguments:
        dim: the latent size (``C * H * W`` for a conv flow).
        context_dim: the size of the context vector (0: unconditional).
        blocks: coupling blocks (dense: in all; conv: per scale).
        width: the subnets' hidden width (dense: features; conv: channels).
        clamp: the coupling's soft clamp on log-scales.
        seed: the seed of its initial weights and rotations.
        kind: ``"spline"``, ``"dense"`` (affine) or ``"conv"``.
        shape: ``(C, H, W)`` of the latent for a conv flow; ``()`` for a dense one.
        levels: the conv flow's squeezes (scales); 0 keeps one scale at full resolution.
        frequencies: Fourier features of the context: each entry ``c`` (in [-1, 1]) also
            enters the subnets as ``sin(πkc/2)`` and ``cos(πkc/2)`` for k = 1..frequencies, so
            that a target that moves fast over part of a slider's range can be followed (0:
            the raw values only).

    Example:
        >>> FlowConfig(dim=4 * 8 * 8, kind="conv", shape=(4, 8, 8), levels=2, width=32)
    """

    dim: int
    context_dim: int = 0
    blocks: int = 8
    width: int = 256
    clamp: float = 2.0
    seed: int = 0
    kind: str = "dense"
    shape: tuple[int, ...] = ()
    levels: int = 0
    frequencies: int = 0

    @property
    def condition_dim(self) -> int:
        """The size of the context the subnets see (raw values and their Fourier features)."""
        return self.context_dim * (1 + 2 * self.frequencies)

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
        if self.kind not in FLOW_KINDS:
            raise ValueError(f"flow kind '{self.kind}' is not one of {', '.join(FLOW_KINDS)}")
        if self.dim < 1 or self.blocks < 1 or self.width < 1 or self.context_dim < 0 \
                or not 0 <= self.frequencies <= MAX_FREQUENCIES:
            raise ValueError(f"flow sizes must be positive: dim={self.dim}, "
                             f"blocks={self.blocks}, width={self.width}, "
                             f"context_dim={self.context_dim}, frequencies="
                             f"{self.frequencies} (at most {MAX_FREQUENCIES})")
        if self.kind in FLAT_KINDS:
            if self.shape or self.levels:
                raise ValueError(f"a {self.kind} flow takes no shape or levels (those are "
                                 "conv's)")
            return
        problem = conv_shape_problem(self.dim, self.shape, self.levels)
        if problem:
            raise ValueError(problem)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as plain values; a dense flow's record omits the conv fields, so
        it reads exactly as it did before there were two kinds."""
        data = asdict(self)
        if not self.frequencies:
            data.pop("frequencies")  # flows without them read as they always did
        if self.kind in FLAT_KINDS:
            for key in ("kind", "shape", "levels") if self.kind == "dense" else ("shape",
                                                                                  "levels"):
                data.pop(key)
        else:
            data["shape"] = list(self.shape)
        return data


def conv_shape_problem(dim: int, shape: tuple[int, ...], levels: int) -> str:
    """Return why ``shape`` and ``levels`` cannot make a conv flow over ``dim`` ('' if they can)."""
    if len(shape) != 3 or any(s < 1 for s in shape):
        return f"a conv flow needs a latent shape (C, H, W) of positive sizes, not {shape}"
    channels, height, width = shape
    if channels * height * width != dim:
        return f"shape {shape} holds {channels * height * width} entries, not dim={dim}"
    if not 0 <= levels <= MAX_LEVELS:
        return f"levels={levels} is outside 0..{MAX_LEVELS}"
    if height % 2**levels or width % 2**levels:
        return f"{levels} squeezes need sides divisible by {2**levels}, not {height}x{width}"
    if levels == 0 and channels < 2:
        return "a one-channel latent needs at least one squeeze (levels >= 1) to couple"
    return ""


def auto_levels(shape: tuple[int, ...], most: int = 4) -> int:
    """Return how many squeezes a conv flow takes on ``shape``: up to ``most``, while both sides
    stay even and at least 2 after the squeeze."""
    _, height, width = shape
    levels = 0
    while (levels < most and height % 2 == 0 and width % 2 == 0
           and min(height, width) // 2 >= 2):
        height, width, levels = height // 2, width // 2, levels + 1
    if levels == 0 and shape[0] < 2 and height % 2 == 0 and width % 2 == 0:
        levels = 1  # one channel must be squeezed to couple at all
    return levels


def _subnet(width: int):
    def build(n_in: int, n_out: int) -> nn.Module:
        hidden = [nn.Linear(n_in, width), nn.SiLU(), nn.Linear(width, width), nn.SiLU()]
        last = nn.Linear(width, n_out)
        # Zero last layer: the coupling starts as the identity.
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        return nn.Sequential(*hidden, last)

    return build


def _conv_subnet(width: int):
    # Glow's coupling network: 3x3, 1x1, 3x3 convolutions.
    def build(n_in: int, n_out: int) -> nn.Module:
        hidden = [nn.Conv2d(n_in, width, 3, padding=1), nn.SiLU(),
                  nn.Conv2d(width, width, 1), nn.SiLU()]
        last = nn.Conv2d(width, n_out, 3, padding=1)
        # Zero last layer: the coupling starts as the identity.
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
        return nn.Sequential(*hidden, last)

    return build


def context_features(context: torch.Tensor, frequencies: int) -> torch.Tensor:
    """Return ``context`` (rows in [-1, 1]) with ``sin(πkc/2)``, ``cos(πkc/2)`` for k = 1..
    ``frequencies`` of every entry appended (unchanged for 0)."""
    if not frequencies:
        return context
    k = torch.arange(1, frequencies + 1, device=context.device, dtype=context.dtype)
    angles = (context[:, :, None] * k * (math.pi / 2)).flatten(1)
    return torch.cat([context, angles.sin(), angles.cos()], dim=1)


def _random_rotation(dim: int, generator: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))  # a Haar-distributed orthogonal matrix
    return q.float()


class _Seeded:
    """Seeds torch's and numpy's global RNGs for a block of code, then restores them: FrEIA
    draws its initial permutations from numpy and the subnets draw from torch."""

    def __init__(self, seed: int):
        self.seed = seed

    def __enter__(self) -> None:
        self.fork = torch.random.fork_rng(devices=[])
        self.fork.__enter__()
        torch.manual_seed(self.seed)
        self.numpy_state = np.random.get_state()
        np.random.seed(self.seed % 2**32)

    def __exit__(self, *exc: object) -> None:
        np.random.set_state(self.numpy_state)
        self.fork.__exit__(None, None, None)


def _redraw_rotations(blocks, seed: int) -> None:
    """Give every AllInOneBlock a rotation drawn from ``seed`` (a flow is a pure function of its
    config, whatever ran before)."""
    generator = torch.Generator().manual_seed(seed)
    for block in blocks:
        if isinstance(block, fm.AllInOneBlock):
            n = block.w_perm.shape[0]
            w = _random_rotation(n, generator)
            extra = block.w_perm.shape[2:]
            block.w_perm.data.copy_(w.view(n, n, *extra))
            block.w_perm_inv.data.copy_(w.T.reshape(n, n, *extra))


class LatentFlow(nn.Module):
    """Creates an invertible flow ``T: (eps, context) -> z`` with exact log-determinant.

    Latents go in and out flat, ``(B, dim)``, whatever the kind: a ``dense`` flow is a stack of
    FrEIA ``AllInOneBlock`` s on the flat vector, a ``conv`` flow a :class:`MultiscaleINN` that
    sees the latent as ``(C, H, W)``.

    Arguments:
        config: kind, dimensions, depth, subnet width, coupling clamp and seed.

    Example:
        >>> flow = LatentFlow(FlowConfig(dim=64))
        >>> z, logdet = flow(torch.randn(8, 64))
        >>> eps, inv_logdet = flow.inverse(z)
    """

    def __init__(self, config: FlowConfig):
        super().__init__()
        self.config = config
        self.inn: nn.Module
        if config.kind == "conv":
            self.inn = MultiscaleINN(config)
        elif config.kind == "spline":
            self.inn = SplineINN(config.dim, config.condition_dim, config.blocks, config.width,
                                 config.seed)
        else:
            conditional = config.context_dim > 0
            sequence = ff.SequenceINN(config.dim)
            with _Seeded(config.seed):
                for _ in range(config.blocks):
                    sequence.append(
                        fm.AllInOneBlock,
                        cond=0 if conditional else None,
                        cond_shape=(config.condition_dim,) if conditional else None,
                        subnet_constructor=_subnet(config.width),
                        affine_clamping=config.clamp,
                        # Redrawn below either way; scipy's draw is slow on large latents.
                        permute_soft=config.dim <= 512,
                    )
            self.inn = sequence
        _redraw_rotations(self.inn.modules(), config.seed)

    @property
    def dim(self) -> int:
        return self.config.dim

    def _cond(self, context: torch.Tensor | None):
        if self.config.context_dim == 0:
            return None
        if context is None:
            raise ValueError("this flow is conditional: pass a context tensor")
        return [context_features(context, self.config.frequencies)]

    def forward(self, eps: torch.Tensor, context: torch.Tensor | None = None):
        """Return ``(z, log|det dz/deps|)`` for a batch of noise ``eps``."""
        z, logdet = self.inn(eps, c=self._cond(context))
        return z, logdet

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        """Return ``(eps, log|det deps/dz|)`` for a batch of latents ``z``."""
        eps, logdet = self.inn(z, c=self._cond(context), rev=True)
        return eps, logdet

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return the flow's exact log-density at ``z`` (base N(0, I) pushed through T)."""
        eps, logdet = self.inverse(z, context)
        return standard_normal_log_prob(eps) + logdet


class FixedContextFlow(nn.Module):
    """A conditional flow with (some of) its context held at one value.

    A slider stage's flow at one setting (``Artifact.at(p=0.3)``) is this, so every sampler
    and measure of unconditional flows applies to it. It shares the trained flow's weights.
    ``columns`` names the context entries held (default: all, an unconditional flow); the
    others stay inputs, in their order (a pose stage's parameters beside fixed sliders).
    """

    context: torch.Tensor

    def __init__(self, flow: LatentFlow, context: torch.Tensor,
                 columns: list[int] | None = None):
        super().__init__()
        self.inner = flow
        total = flow.config.context_dim
        self.columns = list(range(total)) if columns is None else list(columns)
        self.free = [i for i in range(total) if i not in self.columns]
        self.config = replace(flow.config, context_dim=len(self.free))
        self.register_buffer("context", context.reshape(1, -1).float())

    @property
    def dim(self) -> int:
        return self.config.dim

    def _rows(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        fixed = self.context.to(x.device).expand(len(x), -1)
        if not self.free:
            return fixed
        if context is None:
            raise ValueError("this flow still takes context values for its free entries")
        rows = torch.empty(len(x), len(self.columns) + len(self.free), device=x.device)
        rows[:, self.columns] = fixed
        rows[:, self.free] = context.to(rows)
        return rows

    def forward(self, eps: torch.Tensor, context: torch.Tensor | None = None):
        return self.inner(eps, self._rows(eps, context))

    def inverse(self, z: torch.Tensor, context: torch.Tensor | None = None):
        return self.inner.inverse(z, self._rows(z, context))

    def log_prob(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner.log_prob(z, self._rows(z, context))


class MultiscaleINN(nn.Module):
    """Creates the invertible network of a conv flow: flat ``eps <-> z`` with ``z`` seen as an
    image ``(C, H, W)``; called like FrEIA's ``SequenceINN`` (``rev=False``: eps -> z).

    The graph is written from the latent's side, as Glow is from the image's: ``z`` is squeezed
    (Haar), transformed by ``blocks`` AllInOneBlocks (actnorm, a channel rotation that is a
    fixed invertible 1x1 convolution, and an affine coupling with a convolutional subnet), and
    half its channels leave at every scale but the last; the pieces, flattened and
    concatenated, are ``eps``. The context reaches every subnet as constant extra channels.

    Arguments:
        config: a ``kind="conv"`` config with its ``shape`` and ``levels``.
    """

    def __init__(self, config: FlowConfig):
        super().__init__()
        if config.kind != "conv":
            raise ValueError(f"a multiscale network is a conv flow's, not a {config.kind} one's")
        self.shape = config.shape
        channels, height, width = config.shape
        scales = max(config.levels, 1)
        node: Any = ff.InputNode(channels, height, width, name="z")
        nodes: list[Any] = [node]
        pieces: list[Any] = []
        self.condition_sizes: list[tuple[int, int]] = []
        with _Seeded(config.seed):
            for scale in range(scales):
                if config.levels:
                    node = ff.Node(node, fm.HaarDownsampling, {"order_by_wavelet": True},
                                   name=f"squeeze{scale}")
                    nodes.append(node)
                    channels, height, width = 4 * channels, height // 2, width // 2
                condition = None
                if config.context_dim:
                    condition = ff.ConditionNode(config.condition_dim, height, width,
                                                 name=f"context{scale}")
                    nodes.append(condition)
                    self.condition_sizes.append((height, width))
                for block in range(config.blocks):
                    node = ff.Node(node, fm.AllInOneBlock,
                                   {"subnet_constructor": _conv_subnet(config.width),
                                    "affine_clamping": config.clamp, "permute_soft": True},
                                   conditions=condition, name=f"block{scale}.{block}")
                    nodes.append(node)
                if scale < scales - 1:
                    split = ff.Node(node, fm.Split, {"n_sections": 2}, name=f"split{scale}")
                    out = ff.Node(split.out1, fm.Flatten, {}, name=f"out{scale}")
                    nodes += [split, out]
                    pieces.append(out)
                    node, channels = split.out0, channels - channels // 2
            last = ff.Node(node, fm.Flatten, {}, name=f"out{scales - 1}")
            nodes.append(last)
            pieces.append(last)
            if len(pieces) > 1:
                nodes.append(ff.Node([(p, 0) for p in pieces], fm.Concat, {"dim": 0},
                                     name="eps"))
            nodes.append(ff.OutputNode(nodes[-1], name="output"))
            self.graph = ff.GraphINN(nodes)

    def forward(self, x: torch.Tensor, c: list[torch.Tensor] | None = None, rev: bool = False):
        """Return ``(z, log|det dz/deps|)`` for flat ``eps`` (``rev``: ``(eps, log|det|)``)."""
        conditions = None
        if c:
            grid = c[0][:, :, None, None]  # the context as constant channels at every scale
            conditions = [grid.expand(-1, -1, h, w) for h, w in self.condition_sizes]
        if not rev:
            z, logdet = self.graph(x, c=conditions, rev=True)
            return z.reshape(z.shape[0], -1), logdet
        return self.graph(x.reshape(x.shape[0], *self.shape), c=conditions)


#: Latents of at most this many entries get the small dense flow (see :func:`dense_size`).
SMALL_LATENT = 64


def dense_size(dim: int) -> tuple[int, int]:
    """Return ``(blocks, width)`` of the dense flow sized to a latent of ``dim`` entries.

    Small latents (the embedded worlds' 32 and 33 entries) get 8 blocks of width 128: a third
    of the parameters of 8 x 256 and a third of its time at batch 256 (shapes: 1.2 % of the
    generator's decode instead of 3.5 %, benchmarks/flow_sizing.py), and as good on the
    training goals (docs/scaling.md). Halving the depth as well (4 x 128) cost the rare target
    and the flow's closeness: blue triangles 0.80 instead of 0.85, red circles' ESS/N 0.14
    instead of 0.30. Larger latents keep PromptGen's 8 x 256.
    """
    if dim <= SMALL_LATENT:
        return 8, 128
    return 8, 256


#: Conv flows: coupling blocks per scale and hidden channels, unless the caller sets them.
CONV_BLOCKS, CONV_WIDTH = 4, 64


def flow_config_for(generator: Any, blocks: int | None = None, width: int | None = None,
                    context_dim: int = 0, seed: int = 0, kind: str | None = None,
                    frequencies: int = 0, coupling: str = "affine") -> FlowConfig:
    """Return the config of a flow over ``generator``'s latent.

    A generator that declares an image-shaped latent (``latent_shape``, e.g. diffusion's
    initial noise) gets a conv flow, any other a flat one: FrEIA's affine blocks (kind
    ``dense``), or spline couplings for ``coupling="spline"``; ``kind`` overrides the choice.
    ``blocks`` and ``width`` left at None are sized to the latent (:func:`dense_size`; conv:
    ``CONV_BLOCKS`` per scale of ``CONV_WIDTH`` channels). ``frequencies``: Fourier features
    of the context (FlowConfig).

    Example:
        >>> flow = LatentFlow(flow_config_for(generator, context_dim=2, seed=1))
    """
    dim = int(generator.latent_dim)
    shape = getattr(generator, "latent_shape", None)
    if coupling not in COUPLINGS:
        raise ValueError(f"coupling '{coupling}' is not one of {', '.join(COUPLINGS)}")
    kind = kind or ("conv" if shape else COUPLINGS[coupling])
    if kind not in FLOW_KINDS:
        raise ValueError(f"flow kind '{kind}' is not one of {', '.join(FLOW_KINDS)}")
    if kind in FLAT_KINDS:
        auto_blocks, auto_width = dense_size(dim)
        return FlowConfig(dim=dim, context_dim=context_dim, blocks=blocks or auto_blocks,
                          width=width or auto_width, seed=seed, frequencies=frequencies,
                          kind=kind)
    if not shape:
        raise ValueError(f"a conv flow needs an image-shaped latent, and generator "
                         f"'{getattr(generator, 'id', generator)}' declares no latent_shape")
    shape = tuple(int(s) for s in shape)
    return FlowConfig(dim=dim, context_dim=context_dim, blocks=blocks or CONV_BLOCKS,
                      width=width or CONV_WIDTH, seed=seed, kind="conv", shape=shape,
                      levels=auto_levels(shape), frequencies=frequencies)


#: A flat latent's coupling (TrainConfig.coupling) and the flow kind it makes.
COUPLINGS = {"spline": "spline", "affine": "dense"}  # keys: options.COUPLING_CHOICES


def standard_normal_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Return log N(x; 0, I) per row."""
    return -0.5 * (x.pow(2).sum(dim=1) + x.shape[1] * math.log(2 * math.pi))


__all__ = ["CONV_BLOCKS", "CONV_WIDTH", "COUPLINGS", "FLAT_KINDS", "FLOW_KINDS", "FlowConfig",
           "LatentFlow", "SplineINN",
           "MAX_FREQUENCIES", "MultiscaleINN", "auto_levels", "context_features", "dense_size",
           "flow_config_for",
           "standard_normal_log_prob"]
