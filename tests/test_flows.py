"""Every flow configuration through the same checks: inverse, log-det, gradients, round trip.

The catalogue holds dense flows and conv flows (multiscale, over image-shaped latents); each
check runs on every entry through the common interface (flat latents in and out).
"""

import json
import math

import pytest
import torch

from energyql.errors import ArtifactError
from energyql.flows import (
    COUPLINGS,
    FlowConfig,
    LatentFlow,
    MultiscaleINN,
    auto_levels,
    context_features,
    dense_size,
    flow_config_for,
    standard_normal_log_prob,
)
from energyql.generators.base import Generator
from energyql.manifest import FlowRecord, Manifest

CONFIGS = [
    FlowConfig(dim=4, blocks=2, width=16),
    FlowConfig(dim=7, blocks=3, width=32, seed=3),
    FlowConfig(dim=6, context_dim=2, blocks=2, width=16),
    # Fourier features of the context (a slider stage's flow).
    FlowConfig(dim=6, context_dim=2, blocks=2, width=16, frequencies=3),
    # Conv flows on a (2, 4, 4) latent: two scales (squeeze, split, squeeze), one scale with
    # no squeeze, and a conditional one.
    FlowConfig(dim=32, blocks=2, width=8, kind="conv", shape=(2, 4, 4), levels=2),
    FlowConfig(dim=32, blocks=2, width=8, kind="conv", shape=(2, 4, 4), levels=0, seed=5),
    FlowConfig(dim=32, context_dim=3, blocks=2, width=8, kind="conv", shape=(2, 4, 4),
               levels=1),
    FlowConfig(dim=16, context_dim=1, blocks=1, width=4, kind="conv", shape=(1, 4, 4),
               levels=2),
    FlowConfig(dim=32, context_dim=1, blocks=2, width=8, kind="conv", shape=(2, 4, 4),
               levels=1, frequencies=2),
    # Spline couplings (the default over flat latents): plain, odd-sized and conditional.
    FlowConfig(dim=4, blocks=2, width=16, kind="spline"),
    FlowConfig(dim=7, blocks=3, width=16, kind="spline", seed=3),
    FlowConfig(dim=6, context_dim=2, blocks=2, width=16, kind="spline", frequencies=2),
    FlowConfig(dim=1, blocks=2, width=8, kind="spline"),  # nothing kept: knots from biases
]
CONDITIONAL = [c for c in CONFIGS if c.context_dim]
SOURCE = 'clip("a red square")'


def _perturbed(config: FlowConfig):
    flow = LatentFlow(config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in flow.parameters():
            if p.requires_grad:
                p.add_(0.2 * torch.randn(p.shape, generator=generator))
    return flow


def _context(config, n):
    return torch.randn(n, config.context_dim) if config.context_dim else None


def test_a_flow_builds_the_network_of_the_kind_its_config_names():
    kinds = [type(LatentFlow(c).inn).__name__ for c in CONFIGS]
    assert kinds == ["SequenceINN"] * 4 + ["MultiscaleINN"] * 5 + ["SplineINN"] * 4


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_latents_are_flat_and_of_the_configured_size(config):
    flow = LatentFlow(config)
    z, logdet = flow(torch.randn(3, config.dim), _context(config, 3))
    assert z.shape == (3, config.dim) and logdet.shape == (3,) and flow.dim == config.dim
    assert flow.config is config


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_inverse_recovers_input_and_logdets_cancel(config):
    flow = _perturbed(config)
    eps = torch.randn(16, config.dim, generator=torch.Generator().manual_seed(config.seed))
    ctx = _context(config, 16)
    z, logdet = flow(eps, ctx)
    back, inverse_logdet = flow.inverse(z, ctx)
    # float32: a perturbed spline flow's steep bins amplify rounding in its inverse (the bin
    # search and the quadratic's root). Over 5,120 random inputs per config the worst round
    # trip was 2.8e-4 and the worst logdet mismatch 1.2e-4 of 1 + |logdet| (dim 7, 3 blocks),
    # where the affine and conv flows stay below 1.5e-6 and 3e-7; unseeded inputs once failed
    # a 1e-5 bound here.
    tolerance = 1e-3 if config.kind == "spline" else 1e-5
    assert torch.allclose(back, eps, atol=tolerance)
    assert torch.allclose(logdet, -inverse_logdet, atol=tolerance, rtol=tolerance)
    assert logdet.abs().max() > 1e-3  # the perturbed flow is not volume-preserving


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_logdet_matches_autograd_jacobian(config):
    flow = _perturbed(config).double()
    eps = torch.randn(3, config.dim, dtype=torch.float64)
    ctx = _context(config, 3)
    ctx = ctx.double() if ctx is not None else None
    _, logdet = flow(eps, ctx)
    for i in range(3):
        c = ctx[i:i + 1] if ctx is not None else None
        jac = torch.autograd.functional.jacobian(lambda x, c=c: flow(x[None], c)[0][0], eps[i])
        assert torch.allclose(torch.linalg.slogdet(jac)[1], logdet[i], atol=1e-6)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_log_prob_is_the_change_of_variables(config):
    flow = _perturbed(config)
    eps, ctx = torch.randn(6, config.dim), _context(config, 6)
    z, logdet = flow(eps, ctx)
    expected = standard_normal_log_prob(eps) - logdet
    assert torch.allclose(flow.log_prob(z, ctx), expected, atol=1e-4)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_gradients_reach_every_trainable_parameter(config):
    flow = _perturbed(config)
    z, logdet = flow(torch.randn(8, config.dim), _context(config, 8))
    (z.pow(2).sum() - logdet.sum()).backward()
    for name, p in flow.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_state_dict_round_trip_gives_identical_outputs(config):
    flow = _perturbed(config)
    copy = LatentFlow(config)
    copy.load_state_dict(flow.state_dict())
    eps, ctx = torch.randn(5, config.dim), _context(config, 5)
    assert torch.equal(flow(eps, ctx)[0], copy(eps, ctx)[0])


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_config_round_trips_through_a_manifest_record(config):
    record = FlowRecord(**config.to_dict())
    assert FlowConfig(**record.to_dict()) == config
    assert record.floats() >= sum(p.numel() for p in LatentFlow(config).parameters()) // 2


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_initial_flow_preserves_the_standard_normal(config):
    # Zero-initialised couplings leave only rotations, squeezes and splits: N(0, I) maps to
    # N(0, I) with log-det 0, whatever the context.
    flow = LatentFlow(config)
    eps = torch.randn(2000, config.dim, generator=torch.Generator().manual_seed(0))
    ctx = _context(config, 2000)
    z, logdet = flow(eps, ctx)
    assert logdet.abs().max() < 1e-5
    assert torch.allclose(z.norm(dim=1), eps.norm(dim=1), atol=1e-4)
    assert torch.allclose(flow.log_prob(z, ctx), standard_normal_log_prob(z), atol=1e-4)
    # Orthogonal: the second moments of z are those of eps.
    assert torch.allclose(z.T @ z / 2000, torch.eye(config.dim), atol=0.15)


@pytest.mark.parametrize("config", CONDITIONAL, ids=str)
def test_the_context_changes_the_output(config):
    flow = _perturbed(config)
    eps = torch.randn(4, config.dim)
    a, b = torch.zeros(4, config.context_dim), torch.ones(4, config.context_dim)
    assert not torch.allclose(flow(eps, a)[0], flow(eps, b)[0], atol=1e-4)
    with pytest.raises(ValueError, match="conditional"):
        flow(eps)


@pytest.mark.parametrize("kind", ["dense", "conv", "spline"])
def test_same_seed_builds_the_same_flow_and_another_seed_does_not(kind):
    extra = {"kind": "conv", "shape": (2, 4, 4), "levels": 1} if kind == "conv" else \
        {"kind": kind}
    dim = 32 if kind == "conv" else 4
    a, b = (LatentFlow(FlowConfig(dim=dim, seed=1, width=8, **extra)) for _ in range(2))
    c = LatentFlow(FlowConfig(dim=dim, seed=2, width=8, **extra))
    eps = torch.randn(3, dim)
    assert torch.equal(a(eps)[0], b(eps)[0])
    if kind == "spline":  # the identity at step 0 whatever the seed: its weights differ
        same, other = (list(f.state_dict().values()) for f in (b, c))
        assert all(torch.equal(x, y) for x, y in zip(list(a.state_dict().values()), same))
        assert not all(torch.equal(x, y) for x, y in zip(same, other))
        return
    assert not torch.allclose(a(eps)[0], c(eps)[0])


def test_the_conv_flow_keeps_the_latent_layout_of_an_image():
    # A conv flow sees z as (C, H, W): z's flat layout is the generator's, row-major.
    flow = _perturbed(FlowConfig(dim=32, blocks=1, width=4, kind="conv", shape=(2, 4, 4),
                                 levels=1))
    z = torch.randn(2, 32)
    eps, _ = flow.inverse(z)
    assert torch.allclose(flow(eps)[0].view(2, 2, 4, 4), z.view(2, 2, 4, 4), atol=1e-5)


@pytest.mark.parametrize("fields, match", [
    ({"kind": "glow"}, "not one of"),
    ({"kind": "conv"}, "latent shape"),
    ({"kind": "conv", "shape": (2, 4, 4)}, "holds 32"),
    ({"kind": "conv", "shape": (1, 2, 2), "levels": 2}, "divisible by 4"),
    ({"kind": "conv", "shape": (1, 2, 2), "levels": 0}, "one-channel"),
    ({"shape": (1, 2, 2)}, "dense flow takes no shape"),
    ({"width": 0}, "positive"),
    ({"context_dim": 1, "frequencies": 17}, "at most 16"),
    ({"context_dim": 1, "frequencies": -1}, "frequencies=-1"),
])
def test_impossible_configs_are_refused_when_built(fields, match):
    with pytest.raises(ValueError, match=match):
        FlowConfig(dim=4, **fields)


class _Image(Generator):
    def __init__(self, shape=None, dim=48):
        super().__init__()
        self.latent_shape = shape
        self.latent_dim = math.prod(shape) if shape else dim
        self.id = "image-latent"

    def decode(self, z, context=None):
        return z[:, :3 * 4].reshape(-1, 3, 2, 2).sigmoid()


def test_flow_config_for_picks_conv_for_image_shaped_latents_and_dense_otherwise():
    conv = flow_config_for(_Image((3, 32, 32)), context_dim=2, seed=7)
    assert (conv.kind, conv.shape, conv.levels, conv.dim) == ("conv", (3, 32, 32), 4, 3072)
    assert (conv.context_dim, conv.seed) == (2, 7)
    flat = flow_config_for(_Image(), blocks=3, width=16, coupling="spline")
    assert (flat.kind, flat.dim, flat.blocks, flat.width) == ("spline", 48, 3, 16)
    dense = flow_config_for(_Image(), blocks=3, width=16)
    assert (dense.kind, dense.dim, dense.blocks, dense.width) == ("dense", 48, 3, 16)
    assert (flow_config_for(_Image()).blocks, flow_config_for(_Image()).width) == dense_size(48)
    forced = flow_config_for(_Image((3, 4, 4)), kind="dense")
    assert forced.kind == "dense" and forced.shape == ()
    with pytest.raises(ValueError, match="declares no latent_shape"):
        flow_config_for(_Image(), kind="conv")
    with pytest.raises(ValueError, match="coupling 'cubic'"):
        flow_config_for(_Image(), coupling="cubic")


def test_the_couplings_users_name_are_the_flows_couplings():
    from energyql.options import COUPLING_CHOICES

    assert tuple(COUPLINGS) == COUPLING_CHOICES


def test_a_spline_flow_records_its_kind_and_a_spline_record_refuses_conv_fields(tmp_path):
    config = FlowConfig(dim=6, blocks=2, width=8, kind="spline")
    assert config.to_dict()["kind"] == "spline" and "shape" not in config.to_dict()
    assert FlowRecord(**config.to_dict()).to_dict() == config.to_dict()
    # Its allocation estimate counts the knots: 23 numbers per entry and block at 8 bins.
    assert FlowRecord(**config.to_dict()).floats() > FlowRecord(dim=6, blocks=2,
                                                                width=8).floats()
    with pytest.raises(ValueError, match="no shape or levels"):
        FlowConfig(dim=6, kind="spline", shape=(1, 2, 3))


@pytest.mark.parametrize("shape, levels", [((3, 32, 32), 4), ((4, 64, 64), 4), ((2, 4, 4), 1),
                                           ((3, 5, 5), 0), ((1, 2, 2), 1), ((3, 12, 20), 2)])
def test_auto_levels_squeeze_while_the_sides_allow(shape, levels):
    assert auto_levels(shape) == levels


def test_fourier_features_keep_the_values_and_add_a_sine_and_cosine_per_frequency():
    context = torch.tensor([[-1.0, 0.5], [0.0, 1.0]])
    assert context_features(context, 0) is context
    features = context_features(context, 3)
    assert features.shape == (2, 2 * (1 + 2 * 3))
    assert torch.equal(features[:, :2], context)
    # Entry 1 of row 0 (c = 0.5) at k = 2: sin(π/2) = 1 and cos(π/2) = 0.
    sines, cosines = features[:, 2:8].view(2, 2, 3), features[:, 8:].view(2, 2, 3)
    assert sines[0, 1, 1] == pytest.approx(1.0) and cosines[0, 1, 1] == pytest.approx(0.0, abs=1e-6)
    # Every feature is a sine or cosine of the entry: bounded, and the k = 1 pair is one turn
    # of a quarter circle over [-1, 1], so no two settings in the range share features.
    assert features[:, 2:].abs().max() <= 1


def test_a_flow_with_fourier_features_records_them_and_flows_without_read_as_before():
    with_features = FlowConfig(dim=6, context_dim=2, frequencies=3)
    assert with_features.to_dict()["frequencies"] == 3
    assert "frequencies" not in FlowConfig(dim=6, context_dim=2).to_dict()
    assert FlowRecord(**with_features.to_dict()).to_dict() == with_features.to_dict()
    # The record's size estimate counts the subnets' wider input.
    assert FlowRecord(**with_features.to_dict()).floats() > \
        FlowRecord(dim=6, context_dim=2).floats()


def test_dense_manifests_read_and_write_as_before_conv_fields_came():
    record = FlowRecord(dim=8, blocks=2, width=16)
    assert set(record.to_dict()) == {"dim", "context_dim", "blocks", "width", "clamp", "seed"}
    assert set(FlowConfig(dim=8).to_dict()) == set(record.to_dict())


def _artifact_on(generator, config, directory):
    from energyql.sampler import Artifact, StageSampler, manifest_for

    flow = _perturbed(config).eval()
    sampler = StageSampler(generator, flow, 1, SOURCE).eval()
    artifact = Artifact(sampler, manifest_for(sampler, source=SOURCE))
    artifact.save(directory)
    return artifact


def test_a_conv_flow_artifact_saves_and_loads_with_the_same_samples(tmp_path):
    import energyql as eq

    generator = _Image((3, 4, 4))
    config = flow_config_for(generator, blocks=2, width=8, seed=3)
    artifact = _artifact_on(generator, config, tmp_path)
    written = json.loads((tmp_path / "manifest.json").read_text())["stages"][0]["flow"]
    assert (written["kind"], written["shape"], written["levels"]) == ("conv", [3, 4, 4], 1)
    loaded = eq.load(tmp_path, gen=generator)
    assert isinstance(loaded.sampler.flow.inn, MultiscaleINN)
    assert loaded.sampler.flow.config == config
    assert loaded.sampler.latent_shape == (3, 4, 4)
    assert torch.equal(loaded.sample(5, seed=2), artifact.sample(5, seed=2))


def test_a_conv_flow_on_a_generator_of_another_shape_is_refused(tmp_path):
    import energyql as eq

    _artifact_on(_Image((3, 4, 4)), flow_config_for(_Image((3, 4, 4)), 1, 4), tmp_path)
    with pytest.raises(ArtifactError, match=r"flow\.shape"):
        eq.load(tmp_path, gen=_Image((12, 2, 2)))


@pytest.mark.parametrize("change, match", [
    ({"kind": "glow"}, "flow.kind"),
    ({"shape": [3, 4]}, "flow.shape"),
    ({"shape": [3, 4, 5]}, "flow.shape"),
    ({"levels": 3}, "flow.shape"),
    ({"levels": 99}, "flow.levels"),
    ({"kind": "dense"}, "flow.shape"),
    ({"kind": "spline"}, "flow.shape"),
])
def test_a_bad_conv_flow_record_is_refused_naming_the_field(change, match, tmp_path):
    _artifact_on(_Image((3, 4, 4)), flow_config_for(_Image((3, 4, 4)), 1, 4), tmp_path)
    data = json.loads((tmp_path / "manifest.json").read_text())
    data["stages"][0]["flow"].update(change)
    with pytest.raises(ArtifactError, match=match.replace(".", r"\.")):
        Manifest.from_dict(data)


@pytest.mark.parametrize("context_dim", [0, 1])
def test_a_conv_flow_learns_a_shifted_gaussian_by_reverse_kl(context_dim):
    # Target N(m, I) over a (2, 4, 4) latent, m = +1 on channel 0 and -1 on channel 1 (times
    # the context when there is one): the reverse KL is minimised by a shift the couplings
    # must learn, across scales.
    torch.manual_seed(0)
    config = FlowConfig(dim=32, context_dim=context_dim, blocks=2, width=16, kind="conv",
                        shape=(2, 4, 4), levels=1)
    flow = LatentFlow(config)
    mean = torch.cat([torch.ones(16), -torch.ones(16)])
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(300):
        ctx = torch.rand(64, 1) * 2 - 1 if context_dim else None
        target = mean * (ctx if ctx is not None else 1)
        z, logdet = flow(torch.randn(64, 32), ctx)
        loss = (0.5 * (z - target).pow(2).sum(1) - logdet).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        ctx = torch.full((2000, 1), 0.5) if context_dim else None
        z, _ = flow(torch.randn(2000, 32), ctx)
    expected = mean * (0.5 if context_dim else 1)
    assert (z.mean(0) - expected).abs().max() < 0.2
    assert (z.std(0) - 1).abs().max() < 0.2


def test_the_scaling_benchmark_measures_a_tiny_conv_flow():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "flow_scaling.py"
    spec = importlib.util.spec_from_file_location("benchmark_flow_scaling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    row = module.run_case("conv", (2, 4, 4), batch=2, repeats=1)
    assert row["dim"] == 32 and row["parameters"] > 0 and row["ms_per_sample"] > 0
    assert row["saved_mib"] >= 0 and row["process_peak_mib"] > row["before_mib"] > 0


def test_a_diffusion_generator_gets_a_conv_flow_that_trains_through_it():
    diffusers = pytest.importorskip("diffusers")
    from energyql.generators.diffusion import DiffusionGenerator
    from tests.generators.diffusion_helpers import tiny_unet

    gen = DiffusionGenerator(tiny_unet(), diffusers.DDIMScheduler(num_train_timesteps=50),
                             steps=2)
    assert gen.latent_shape == (3, 8, 8)
    config = flow_config_for(gen, context_dim=0, seed=2)
    assert (config.kind, config.shape, config.levels) == ("conv", (3, 8, 8), 2)
    flow = _perturbed(config)
    z, logdet = flow(torch.randn(2, gen.latent_dim))
    images = gen.decode(z)
    assert images.shape == (2, 3, 8, 8)
    (images.mean() - logdet.mean()).backward()
    assert all(p.grad is not None for p in flow.parameters() if p.requires_grad)


def test_a_flow_with_some_context_held_takes_the_rest_in_order():
    from energyql.flows import FixedContextFlow

    flow = LatentFlow(FlowConfig(dim=4, blocks=2, width=8, context_dim=3, seed=0))
    for p in flow.parameters():  # away from the identity, so that the context matters
        torch.nn.init.normal_(p, std=0.2)
    held = FixedContextFlow(flow, torch.tensor([0.5, -0.25]), columns=[0, 2])
    assert held.config.context_dim == 1
    eps = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    free = torch.full((5, 1), 0.75)
    full = torch.tensor([[0.5, 0.75, -0.25]]).expand(5, -1)
    z, logdet = held(eps, free)
    z_full, logdet_full = flow(eps, full)
    assert torch.allclose(z, z_full) and torch.allclose(logdet, logdet_full)
    assert torch.allclose(held.log_prob(z, free), flow.log_prob(z, full))
    assert not torch.allclose(held(eps, -free)[0], z)  # the free entry is an input
    with pytest.raises(ValueError, match="free entries"):
        held(eps)
