"""Our StyleGAN2 against numbers produced by rosinality's reference implementation.

The fixture stores only outputs (an 8x8 subsample and the row means of each image) of the
reference on the seeded weights and inputs of :mod:`tests.generators.sg2_helpers`; see
docs/generators.md for how it was made and the measured differences.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from energyql.generators.stylegan2 import StyleGAN2, from_state_dict
from tests.generators.sg2_helpers import (
    GOLDEN_CONFIGS,
    golden_inputs,
    run_case,
    seeded_state_dict,
    summary,
)

FIXTURE = Path(__file__).parent / "data" / "stylegan2_golden.safetensors"
TOLERANCE = 1e-4


def _expected():
    with safe_open(str(FIXTURE), framework="pt") as f:
        return ({k: f.get_tensor(k) for k in f.keys()},  # noqa: SIM118 (safe_open is not iterable)
                json.loads(f.metadata()["configs"]))


def test_fixture_configs_match_helpers():
    _, configs = _expected()
    for name, (size, style_dim, n_mlp, cm, seed, batch, cases) in GOLDEN_CONFIGS.items():
        assert configs[name] == [size, style_dim, n_mlp, cm, seed, batch, list(cases)]


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_matches_reference(name):
    torch.manual_seed(0)
    expected, _ = _expected()
    size, style_dim, n_mlp, cm, seed, batch, cases = GOLDEN_CONFIGS[name]
    template = StyleGAN2(size, style_dim, n_mlp, channel_multiplier=cm).state_dict()
    net = from_state_dict(seeded_state_dict(template, seed)).eval()
    inputs = golden_inputs(style_dim, net.n_latent, net.num_layers, seed, batch)
    with torch.no_grad():
        for case in cases:
            for key, value in summary(run_case(net, case, inputs)).items():
                reference = expected[f"{name}.{case}.{key}"]
                assert value.shape == reference.shape
                diff = (value - reference).abs().max().item()
                assert diff <= TOLERANCE, f"{name}/{case}/{key}: max |diff| {diff:.3g}"
