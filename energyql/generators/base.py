"""The Generator protocol: what the trainer, energies and samplers may assume of a generator.

A generator maps a latent ``z`` drawn from its prior to images in ``[0, 1]`` of shape
``(B, 3, H, W)``. It knows nothing about energies or flows. A trained stage sampler is itself
a Generator, which is how ``then`` chains stages.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Generator(nn.Module):
    """Base class of every generator: a standard-normal latent prior and a decoder.

    Subclasses set ``latent_dim``, ``id``, ``catalog`` (a catalog name), ``image_size``,
    ``weights_digest`` (and ``latent_shape`` if the latent is image-shaped) and implement
    :meth:`decode`. The prior is N(0, I) unless
    :meth:`log_prior` and :meth:`sample_latent` are overridden.
    """

    latent_dim: int
    id: str = "generator"
    catalog: str = "generic"
    image_size: int = 0
    weights_digest: str = ""
    context_dim: int = 0  # conditional samplers take a context vector as well
    # ``(C, H, W)`` when the flat latent is an image (a diffusion model's initial noise), so
    # that flows over it can be convolutional (energyql.flows.flow_config_for); else None.
    latent_shape: tuple[int, int, int] | None = None

    def sample_latent(self, n: int, *, generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
        """Return ``n`` latents drawn from the prior."""
        device = device if device is not None else self.device
        return torch.randn(n, self.latent_dim, generator=generator, device=device)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """Return the log-density of the prior at each row of ``z``, shape ``(B,)``."""
        return -0.5 * (z.pow(2).sum(dim=1) + self.latent_dim * math.log(2 * math.pi))

    def decode(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return images in [0, 1], shape ``(B, 3, H, W)``, for latents ``z``."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(z, context)

    knows_truth: bool = False  # True when truth() can say what the generator drew
    # The truth() keys that make up a drawn face's identity (those pose must leave alone).
    identity_factors: tuple[str, ...] = ()

    def truth(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the ground-truth factors of the images ``decode(z)`` would draw.

        Keys are catalog attributes (``LongTensor`` value indices in catalog order, shape
        ``(B,)``) and continuous factors (float tensors). Only generators that know what they
        drew (the embedded worlds) implement it; see :attr:`knows_truth`.
        """
        raise NotImplementedError(f"the {self.id} generator cannot say what it drew")

    @torch.no_grad()
    def sample(self, n: int, *, seed: int | None = None, batch_size: int = 256,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """Return ``n`` images sampled from the prior, decoded in batches."""
        gen = torch.Generator(device="cpu")
        if seed is not None:
            gen.manual_seed(seed)
        out = []
        for start in range(0, n, batch_size):
            m = min(batch_size, n - start)
            z = self.sample_latent(m, generator=gen, device="cpu").to(self.device)
            ctx = None if context is None else context[start:start + m].to(self.device)
            out.append(self.decode(z, ctx).cpu())
        return torch.cat(out) if out else torch.empty(0)

    @property
    def device(self) -> torch.device:
        for tensor in list(self.parameters()) + list(self.buffers()):
            return tensor.device
        return torch.device("cpu")


class ModuleGenerator(Generator):
    """Adapts any user ``nn.Module`` mapping ``(B, latent_dim)`` latents to images.

    Arguments:
        module: the network; its output is an image batch ``(B, 3, H, W)``.
        latent_dim: the size of its latent input.
        output_range: the range of its output, mapped linearly to [0, 1] (e.g. ``(-1, 1)``).
        catalog: the catalog name of its world (``"generic"`` if only CLIP is used).

    Example:
        >>> gen = ModuleGenerator(my_net, latent_dim=128, output_range=(-1, 1))
    """

    def __init__(self, module: nn.Module, latent_dim: int, *,
                 output_range: tuple[float, float] = (0.0, 1.0), catalog: str = "generic",
                 id: str = "module", image_size: int = 0):
        super().__init__()
        self.module = module
        self.latent_dim = latent_dim
        self.output_range = output_range
        self.catalog = catalog
        self.id = id
        self.image_size = image_size

    def decode(self, z: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        low, high = self.output_range
        return ((self.module(z) - low) / (high - low)).clamp(0, 1)
