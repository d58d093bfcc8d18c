"""energyql.train (one API with the CLI's behaviour), energyql.Sampler, context validation."""

import math
from dataclasses import replace

import pytest
import torch

import energyql as eq
from energyql.energies.conditional import ContextParam
from energyql.errors import UsageError
from energyql.flows import FlowConfig, LatentFlow, standard_normal_log_prob
from energyql.runlog import read_log
from energyql.sampler import Artifact, StageSampler, manifest_for
from energyql.workflow import defaults_for, train_config
from tests.toys import PointGenerator, TinyImageGenerator, register_tiny

# Small flows and no warm start: seconds on one CPU thread.
TINY = dict(batch=8, blocks=2, width=16, moment_samples=64, refit_every=0,
            warm_start_samples=0, threads=1)


def test_the_config_types_sampler_and_train_are_exported():
    from energyql.api import train
    from energyql.flows import FlowConfig
    from energyql.sampler import Sampler
    from energyql.training import TrainConfig

    assert eq.train is train and eq.Sampler is Sampler
    assert eq.TrainConfig is TrainConfig and eq.FlowConfig is FlowConfig
    assert {"train", "Sampler", "TrainConfig", "UsageError"} <= set(eq.__all__)


def test_settings_go_on_top_of_the_worlds_defaults():
    config = train_config("shapes", steps=10)
    assert config.steps == 10
    for name, value in defaults_for("shapes").items():
        if name != "steps":
            assert getattr(config, name) == value, name
    given = eq.TrainConfig(steps=5, batch=4)  # an explicit config is kept as given
    assert train_config("shapes", given, lr=0.01) == replace(given, lr=0.01)


def test_unknown_settings_raise_a_usage_error_naming_the_valid_ones():
    with pytest.raises(UsageError) as info:
        eq.train("color == red", gen="shapes", bogus=1)
    assert "'bogus'" in str(info.value)
    assert "steps" in info.value.hint and "warm_start_samples" in info.value.hint
    with pytest.raises(UsageError) as info:
        eq.train("color == red", gen="shapes", step=10)
    assert "did you mean 'steps'" in info.value.hint


@pytest.mark.parametrize("name, value", [
    ("steps", 0), ("steps", 2.5), ("batch", True), ("lr", 0.0), ("lr", math.nan),
    ("forward_weight", -1.0), ("amp", "yes"), ("seed", -1)])
def test_bad_setting_values_are_usage_errors(name, value):
    with pytest.raises(UsageError, match=f"training setting {name}="):
        eq.train("color == red", gen="shapes", **{name: value})


def test_generator_loaders_refuse_unknown_options():
    from energyql.generators import load

    with pytest.raises(UsageError, match="unknown option of the shapes generator 'steps'"):
        load("shapes", steps=10)
    with pytest.raises(UsageError, match="'truncation'"):
        eq.train("color == red", gen="shapes", generator_options={"truncation": 0.7},
                 progress=False, **{**TINY, "steps": 1})


def test_train_on_shapes_trains_the_steps_asked_with_the_worlds_defaults(tmp_path):
    art = eq.train("color == red", gen="shapes", out=tmp_path, steps=10, progress=False, **TINY)
    settings = art.manifest.stages[0].train.settings
    assert settings["steps"] == 10 and art.manifest.stages[0].train.steps == 10
    # not given, so the shapes world's own: the chains' weight and the start's pool
    assert settings["chain_weight"] == defaults_for("shapes")["chain_weight"] == 3.0
    assert settings["temper"] == 1.0  # the exact target
    assert art.manifest.stages[0].train.images == 10 * 8  # no λ to fit, the start is off
    steps = [r for r in read_log(tmp_path) if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 11))
    assert all("color == red" in r["parts"] and "on-target share" in r["figures"]
               for r in steps)


def test_report_true_writes_what_the_cli_writes(tmp_path):
    register_tiny()
    art = eq.train("color == red & uniform(size)", gen="toy-shapes", out=tmp_path, report=True,
                   steps=4, samples=32, grid=8, progress=False,
                   **{**TINY, "refit_every": 2, "refit_samples": 32})
    for name in ("report.md", "report.html", "log.jsonl", "curves.png", "metrics.json",
                 "samples.png", "base.png", "stage1.png", "manifest.json", "flows.safetensors"):
        assert (tmp_path / name).is_file(), name
    assert art.manifest.metrics["samples"] == 32
    assert eq.load(tmp_path).manifest.metrics["samples"] == 32
    records = read_log(tmp_path)
    assert [r["step"] for r in records if r["event"] == "step"] == [1, 2, 3, 4]
    fits = [r for r in records if r["event"] == "fit"]
    assert [r["step"] for r in fits] == [0, 2] and "uniform(size)" in fits[0]["lambda"]
    report = (tmp_path / "report.md").read_text()
    assert "[training curves](curves.png)" in report and "![stage 1](stage1.png)" in report


def test_report_needs_an_output_folder():
    with pytest.raises(UsageError, match="report=True needs an output folder"):
        eq.train("color == red", gen="shapes", report=True)


# --- energyql.Sampler ---------------------------------------------------------------------

def _random_flow(dim: int, seed: int, context_dim: int = 0) -> LatentFlow:
    """A flow away from the identity (trained flows are; fresh ones start as rotations)."""
    flow = LatentFlow(FlowConfig(dim=dim, context_dim=context_dim, blocks=3, width=16, seed=seed))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in flow.parameters():
            if parameter.requires_grad:  # not the fixed rotations (each holds its inverse)
                parameter.add_(0.15 * torch.randn(parameter.shape, generator=generator))
    return flow.eval()


@pytest.fixture
def two_stage_points():
    first = StageSampler(PointGenerator(2), _random_flow(2, 1), 1, "a")
    second = StageSampler(first, _random_flow(2, 2), 2, "b")
    return eq.Sampler(Artifact(second, manifest_for(second, source="a | then b")))


def test_log_prob_is_the_change_of_variables_of_the_chain(two_stage_points):
    sampler = two_stage_points
    eps = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x, logdet = eps, torch.zeros(64)
        for stage in reversed(sampler.chain.stages):  # eps -> T_2 -> T_1 -> z
            x, ld = stage.flow(x)
            logdet = logdet + ld
    assert torch.allclose(sampler.latents(eps), x, atol=1e-5)
    expected = standard_normal_log_prob(eps) - logdet
    assert torch.allclose(sampler.log_prob(x), expected, atol=1e-4)


def test_log_prob_integrates_to_one_and_matches_a_histogram_of_samples(two_stage_points):
    sampler = two_stage_points
    axis = torch.linspace(-7, 7, 281)
    step = float(axis[1] - axis[0])
    grid = torch.cartesian_prod(axis, axis)
    density = sampler.log_prob(grid).exp()
    assert abs(float(density.sum()) * step**2 - 1) < 0.01
    # Monte Carlo: the share of samples in a box matches the density's integral over it.
    z = sampler.sample_latents(40_000, seed=1)
    inside = ((z[:, 0] > 0) & (z[:, 1] > 0)).float().mean()
    box = density[(grid[:, 0] > 0) & (grid[:, 1] > 0)].sum() * step**2
    assert abs(float(inside) - float(box)) < 0.015


def test_no_gradients_by_default_and_on_request(two_stage_points):
    sampler = two_stage_points
    assert not any(p.requires_grad for p in sampler.parameters())
    assert not sampler.sample(4, seed=0).requires_grad
    eps = torch.randn(4, 2, requires_grad=True)
    assert not sampler(eps).requires_grad
    sampler(eps, grad=True).pow(2).sum().backward()
    assert eps.grad is not None and eps.grad.abs().sum() > 0


def test_the_sampler_composes_with_other_modules_and_moves_devices(two_stage_points):
    sampler = two_stage_points
    model = torch.nn.Sequential(sampler, torch.nn.Linear(2, 3))
    assert model(torch.randn(5, 2)).shape == (5, 3)
    assert sampler.to("cpu") is sampler and sampler.device.type == "cpu"
    assert torch.equal(sampler.sample(6, seed=3), sampler.sample(6, seed=3))
    assert sampler.sample(6, seed=3, batch_size=4).shape == (6, 2)


def test_sampler_load_matches_the_artifact(tmp_path):
    register_tiny()
    art = eq.train("color == red", gen="toy-shapes", out=tmp_path, steps=2, progress=False,
                   **TINY)
    sampler = eq.Sampler.load(tmp_path, device="cpu")
    assert torch.equal(sampler.sample(5, seed=7), art.sample(5, seed=7))
    assert sampler.manifest.canonical == "color == red"


# --- context validation ------------------------------------------------------------------

@pytest.fixture
def conditional():
    stage = StageSampler(TinyImageGenerator(), _random_flow(8, 3, context_dim=1), 1,
                         "pose(x in 0.3..0.7)", [ContextParam("pose", "x", 0.3, 0.7)])
    return Artifact(stage, manifest_for(stage, source="pose(x in 0.3..0.7)"))


def test_context_values_are_checked(conditional):
    sampler = eq.Sampler(conditional)
    assert sampler.sample(2, seed=0, context={"x": 0.7}).shape == (2, 3, 32, 32)
    with pytest.raises(UsageError, match="x=5 is outside the trained range 0.3..0.7"):
        sampler.sample(2, context={"x": 5.0})
    with pytest.raises(UsageError, match="x=5 is outside"):
        conditional.sample(2, context={"x": 5.0})
    with pytest.raises(UsageError, match="unknown context parameter 'y'"):
        sampler.sample(2, context={"y": 0.5})
    with pytest.raises(UsageError, match="x=nan is outside"):
        sampler.sample(2, context={"x": math.nan})
    with pytest.raises(UsageError, match="has shape"):
        sampler.sample(2, context=torch.full((3, 1), 0.5))
    with pytest.raises(UsageError, match="x=0.9 is outside"):
        sampler.sample(2, context=torch.tensor([[0.5], [0.9]]))


def test_context_on_an_unconditional_sampler_is_refused(two_stage_points):
    artifact = Artifact(two_stage_points.chain, two_stage_points.manifest)
    assert artifact.sample(2, seed=0, context={}).shape == (2, 2)  # nothing given: fine
    with pytest.raises(UsageError, match="this sampler is unconditional"):
        artifact.sample(2, context={"x": 0.5})
    with pytest.raises(UsageError, match="this sampler is unconditional"):
        two_stage_points.sample(2, context={"x": 0.5})
    with pytest.raises(UsageError, match="this sampler is unconditional"):
        two_stage_points.sample(2, context=torch.zeros(2, 1))


def test_a_resumed_run_continues_its_log_and_a_fresh_run_starts_a_new_one(tmp_path,
                                                                           monkeypatch):
    import energyql.training.loop as trainer

    register_tiny()
    settings = dict(TINY, steps=4, checkpoint_every=2, moment_samples=32)
    real = trainer.learning_rate

    def interrupted(config, step):
        if step == 3:
            raise KeyboardInterrupt  # as if killed during the fourth step
        return real(config, step)

    program = "color == red & uniform(size)"
    monkeypatch.setattr(trainer, "learning_rate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        eq.train(program, gen="toy-shapes", out=tmp_path, progress=False, **settings)
    assert [r["step"] for r in read_log(tmp_path) if r["event"] == "step"] == [1, 2, 3]
    monkeypatch.setattr(trainer, "learning_rate", real)
    eq.train(program, gen="toy-shapes", out=tmp_path, resume=True, progress=False, **settings)
    records = read_log(tmp_path)
    # resumed from the checkpoint at step 2: step 3 ran again but is not logged twice
    assert [r["step"] for r in records if r["event"] == "step"] == [1, 2, 3, 4]
    assert [r["step"] for r in records if r["event"] == "fit"] == [0]
    eq.train(program, gen="toy-shapes", out=tmp_path, progress=False, **{**settings, "steps": 2})
    assert [r["step"] for r in read_log(tmp_path) if r["event"] == "step"] == [1, 2]


def test_a_finished_run_drops_its_checkpoints_unless_asked_to_keep_them(tmp_path):
    register_tiny()
    settings = dict(TINY, steps=2, checkpoint_every=1, moment_samples=32)
    eq.train("color == red", gen="toy-shapes", out=tmp_path / "a", progress=False, **settings)
    assert not list((tmp_path / "a").glob("stage*.ckpt.safetensors"))
    assert not list((tmp_path / "a").glob("stage*.optim.pt"))
    assert eq.load(tmp_path / "a").sample(2, seed=0).shape[0] == 2  # the artifact is whole
    eq.train("color == red", gen="toy-shapes", out=tmp_path / "b", progress=False,
             keep_checkpoints=True, **settings)
    assert list((tmp_path / "b").glob("stage1.ckpt.safetensors"))
    assert list((tmp_path / "b").glob("stage1.optim.pt"))
