"""Deterministic random StyleGAN2 weights and inputs shared by the tests and the golden fixture.

The golden fixture (``data/stylegan2_golden.safetensors``) was produced by running rosinality's
reference implementation on exactly these weights and inputs; only its outputs are stored.
"""

from __future__ import annotations

import torch

# name -> (size, style_dim, n_mlp, channel_multiplier, seed, batch, cases)
GOLDEN_CONFIGS = {
    "s16": (16, 64, 2, 2, 11, 2, ("plain", "mixing", "truncation", "wplus_noise")),
    "s64": (64, 128, 3, 1, 12, 1, ("plain", "mixing")),
}


def seeded_state_dict(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    """Return random weights shaped like ``template``, the same for the same seed and names.

    Scales keep activations of order one and make every path (biases, noise strengths)
    matter; the FIR kernels are kept from the template.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(template):
        value = template[name]
        if name.endswith("kernel"):
            out[name] = value.clone()
            continue
        r = torch.randn(value.shape, generator=gen)
        if name.startswith("style.") and name.endswith("weight"):
            r = r * 100  # stored divided by the mapping's lr multiplier 0.01
        elif name.endswith("modulation.bias"):
            r = 1 + 0.2 * r
        elif name.endswith("noise.weight"):
            r = 0.3 * r
        elif name.endswith("bias"):
            r = 0.2 * r
        out[name] = r
    return out


def golden_inputs(style_dim: int, n_latent: int, num_layers: int, seed: int, batch: int) -> dict:
    """Return the seeded inputs of the golden cases."""
    gen = torch.Generator().manual_seed(seed + 1000)
    z1 = torch.randn(batch, style_dim, generator=gen)
    z2 = torch.randn(batch, style_dim, generator=gen)
    z_mean = torch.randn(256, style_dim, generator=gen)
    w_plus = torch.randn(batch, n_latent, style_dim, generator=gen)
    noise = [torch.randn(1, 1, 2 ** ((i + 5) // 2), 2 ** ((i + 5) // 2), generator=gen)
             for i in range(num_layers)]
    return {"z1": z1, "z2": z2, "z_mean": z_mean, "w_plus": w_plus, "noise": noise}


def run_case(net, case: str, inputs: dict) -> torch.Tensor:
    """Return the image of one golden case for ``net`` (ours or the reference)."""
    if case == "plain":
        return net([inputs["z1"]], randomize_noise=False)[0]
    if case == "mixing":
        return net([inputs["z1"], inputs["z2"]], inject_index=3, randomize_noise=False)[0]
    if case == "truncation":
        centre = net.style(inputs["z_mean"]).mean(0, keepdim=True)
        return net([inputs["z1"]], truncation=0.5, truncation_latent=centre,
                   randomize_noise=False)[0]
    if case == "wplus_noise":
        return net([inputs["w_plus"]], input_is_latent=True, noise=inputs["noise"])[0]
    raise ValueError(case)


def summary(image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Return the stored numbers of an image: an 8x8 subsample and every row's mean."""
    step = max(1, image.shape[-1] // 8)
    return {"subsample": image[:, :, ::step, ::step].contiguous(),
            "row_means": image.mean(dim=3).contiguous()}
