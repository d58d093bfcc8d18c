"""Small seeded BigGAN-deep configs and inputs shared by the exactness tests."""

import torch

from energyql.generators.biggan import BigGAN, BigGANConfig, deep_layers

# name -> (config fields, seed): 32x32 and 64x64 nets, narrow enough for a small fixture.
GOLDEN_CONFIGS = {
    "deep32": ({"output_dim": 32, "z_dim": 16, "class_embed_dim": 16, "channel_width": 4,
                    "num_classes": 10,
                    "layers": [(False, 16, 8), (True, 8, 4), (False, 4, 4), (True, 4, 2),
                            (False, 2, 2), (True, 2, 1)],
                    "attention_layer_position": 4, "n_stats": 11}, 0),
    "deep64": ({"output_dim": 64, "z_dim": 8, "class_embed_dim": 8, "channel_width": 4,
                    "num_classes": 7, "layers": deep_layers([(16, 8), (8, 4), (4, 2), (2, 1)]),
                    "attention_layer_position": 6, "n_stats": 51}, 1),
}
TRUNCATIONS = (0.4, 0.73, 1.0)


def seeded_network(name: str) -> BigGAN:
    """Return the named config with seeded random weights, statistics and attention gain."""
    fields, seed = GOLDEN_CONFIGS[name]
    torch.manual_seed(seed)
    net = BigGAN(BigGANConfig(**fields))
    state = net.state_dict()
    gen = torch.Generator().manual_seed(seed + 100)
    for key, value in state.items():
        if key.endswith("running_vars"):
            state[key] = 0.5 + torch.rand(value.shape, generator=gen)
        elif key.endswith(("weight_u", "weight_v")):
            # Spectral-norm vectors stay the unit vectors of one power iteration.
            continue
        elif value.is_floating_point():
            state[key] = 0.3 * torch.randn(value.shape, generator=gen)
    for key in [k for k in state if k.endswith("weight_orig")]:
        # Spectral norm divides by u.W v: give it W's true top singular vectors.
        u, _, vh = torch.linalg.svd(state[key].reshape(state[key].shape[0], -1).double())
        state[key[:-4] + "u"], state[key[:-4] + "v"] = u[:, 0].float(), vh[0].float()
    net.load_state_dict(state)
    return net.eval()


def inputs(name: str, batch: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Return seeded (z, class vectors): one pure class and one mixture per batch."""
    fields, seed = GOLDEN_CONFIGS[name]
    gen = torch.Generator().manual_seed(seed + 200)
    z = torch.randn(batch, fields["z_dim"], generator=gen).clamp(-2, 2)
    classes = torch.zeros(batch, fields["num_classes"])
    classes[0, 1] = 1.0
    classes[1:] = torch.softmax(torch.randn(batch - 1, fields["num_classes"], generator=gen), 1)
    return z, classes
