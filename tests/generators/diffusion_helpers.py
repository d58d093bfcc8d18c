"""A random tiny UNet2DModel shared by the diffusion tests (needs diffusers)."""

import diffusers
import torch


def tiny_unet(seed: int = 0, size: int = 8, out_channels: int = 3):
    """Return a random UNet2DModel small enough for float64 finite differences."""
    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=size, in_channels=3, out_channels=out_channels, layers_per_block=1,
        block_out_channels=(8, 16), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    # Random, not zero-initialised output layers, so that the UNet really shapes the result.
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()
