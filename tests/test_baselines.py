"""Every sampler against 2-D toy targets whose exact distribution is known.

Gaussian target: prior N(0, I) tilted by a quadratic energy is N(m, diag v) (tests/toys.py);
samplers are held to a Gaussian KL (moment-matched) below a stated bound. Predicate target:
N(0, I) tilted by p(side == right | x) = σ(8 x₀); its exact mean of x₀ comes from quadrature.
"""

import math
import re
from dataclasses import replace

import pytest
import torch

from energyql.baselines import SAMPLERS, SamplerError, energy_lower_bound, parse_options, sample
from energyql.energies.combinators import ScaledEnergy, SoftOrEnergy, SumEnergy
from energyql.energies.constraint import ConstraintEnergy
from energyql.energies.lower import StageEnergy
from energyql.energies.predicate import PredicateEnergy, predicate_log_prob
from energyql.flows import FlowConfig, LatentFlow
from energyql.sampler import Artifact, StageSampler, manifest_for, stage_record
from tests.toys import PointGenerator, QuadraticEnergy, SideAttribute, stage

QUADRATIC = dict(mean=[1.5, -1.0], precision=[3.0, 0.5])


def _gaussian_kl(x, mean, var):
    """KL(N(x̄, diag s²) || N(mean, diag var)) of samples x, moment-matched per axis."""
    m0, v0 = x.double().mean(0), x.double().var(0)
    m1, v1 = torch.tensor(mean).double(), torch.tensor(var).double()
    return float(0.5 * (v0 / v1 + (m1 - m0) ** 2 / v1 - 1 + torch.log(v1 / v0)).sum())


def _quadratic():
    energy = QuadraticEnergy(**QUADRATIC)
    mean, var = energy.exact_target()
    return stage(energy), mean.tolist(), var.tolist()


def _right_stage():
    return StageEnergy([PredicateEnergy(predicate_log_prob("side", 1), "side == right")], [],
                       SideAttribute())


def _exact_mean_given_right():
    # E[x | right] under N(0,1)·σ(8x) / Z, Z = 1/2 by symmetry.
    x = torch.linspace(-8, 8, 200001, dtype=torch.float64)
    density = torch.exp(-x * x / 2) / math.sqrt(2 * math.pi) * torch.sigmoid(8 * x)
    return float((x * density).sum() / density.sum())


def _perturbed_flow(seed=1, scale=0.3, dim=2):
    """A flow far from the target but with an exact density: a proposal to be corrected."""
    flow = LatentFlow(FlowConfig(dim=dim, blocks=3, width=16, seed=seed))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in flow.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn(p.shape, generator=generator))
    return flow.eval()


def _artifact(flow, base=None):
    return Artifact(StageSampler(base or PointGenerator(), flow), {})


def test_rejection_of_a_predicate_is_the_conditional_with_its_acceptance_rate():
    result = sample("rejection", PointGenerator(), _right_stage(), n=8000, seed=0)
    assert result.stats["e_min"] == 0.0  # predicates are -log p >= 0
    assert abs(result.stats["acceptance_rate"] - 0.5) < 0.02  # P(right) = 1/2 by symmetry
    assert abs(float(result.images[:, 0].mean()) - _exact_mean_given_right()) < 0.03
    assert len(result.images) == 8000


def test_rejection_with_a_given_bound_reaches_the_gaussian_target():
    energy, mean, var = _quadratic()
    result = sample("rejection", PointGenerator(), energy, n=6000, seed=1, e_min=0.0)
    assert _gaussian_kl(result.latents, mean, var) < 0.01
    assert 0 < result.stats["acceptance_rate"] < 1


def test_rejection_threshold_keeps_only_low_energies():
    energy, _, _ = _quadratic()
    result = sample("rejection", PointGenerator(), energy, n=500, seed=2, threshold=0.5)
    kept = QuadraticEnergy(**QUADRATIC)(type("F", (), {"images": result.images})())
    assert float(kept.max()) <= 0.5


def test_rejection_without_a_bound_says_how_to_give_one():
    energy = StageEnergy([ScaledEnergy(-1.0, QuadraticEnergy(**QUADRATIC), "-1 * q")], [])
    with pytest.raises(SamplerError, match="lower bound") as info:
        sample("rejection", PointGenerator(), energy, n=4)
    assert "e_min" in info.value.hint


def test_importance_resampling_reaches_the_gaussian_target_and_reports_ess():
    energy, mean, var = _quadratic()
    result = sample("importance", PointGenerator(), energy, n=4000, seed=3, pool=64000)
    assert _gaussian_kl(result.latents, mean, var) < 0.01
    assert 0 < result.stats["ess_fraction"] < 1 and result.stats["proposals"] == 64000


@pytest.mark.parametrize("name, step, bound", [("langevin", 0.02, 0.02), ("mala", 0.1, 0.01)])
def test_langevin_reaches_the_gaussian_target(name, step, bound):
    energy, mean, var = _quadratic()
    result = sample(name, PointGenerator(), energy, n=4000, seed=4, steps=150, step_size=step)
    assert _gaussian_kl(result.latents, mean, var) < bound
    if name == "mala":
        assert 0.5 < result.stats["acceptance_rate"] <= 1


def test_flow_corrections_turn_a_wrong_flow_into_the_exact_target():
    energy, mean, var = _quadratic()
    artifact = _artifact(_perturbed_flow())
    plain = sample("flow", artifact, n=8000, seed=5)
    sir = sample("flow+sir", artifact, energy, n=4000, seed=5, pool=32000)
    imh = sample("flow+imh", artifact, energy, n=8000, seed=5, chains=8, burn_in=50)
    assert _gaussian_kl(plain.latents, mean, var) > 0.2  # the flow alone is far off
    assert _gaussian_kl(sir.latents, mean, var) < 0.01
    assert _gaussian_kl(imh.latents, mean, var) < 0.02
    assert 0 < imh.stats["acceptance_rate"] < 1 and 0 < sir.stats["ess_fraction"] < 1


def test_a_perfect_flow_needs_no_correction():
    # Target N(0, I) (zero energy) and the identity flow: every weight is equal.
    energy = stage(QuadraticEnergy([0.0, 0.0], [0.0, 0.0]))
    artifact = _artifact(LatentFlow(FlowConfig(dim=2, blocks=2, width=8)).eval())
    sir = sample("flow+sir", artifact, energy, n=1000, seed=6)
    imh = sample("flow+imh", artifact, energy, n=1000, seed=6)
    assert sir.stats["ess_fraction"] > 0.999
    assert imh.stats["acceptance_rate"] > 0.999


def test_last_stage_is_corrected_over_the_previous_stage():
    # Stage 1 is an identity flow (a rotation of N(0, I)), so stage 2's exact target in image
    # space is the same Gaussian; stage 2's flow is deliberately wrong.
    stage1 = StageSampler(PointGenerator(), LatentFlow(FlowConfig(dim=2, blocks=2, width=8)).eval())
    artifact = Artifact(StageSampler(stage1, _perturbed_flow(seed=2), index=2), {})
    energy, mean, var = _quadratic()
    result = sample("flow+sir", artifact, energy, n=4000, seed=7, pool=32000)
    assert _gaussian_kl(result.images, mean, var) < 0.01
    baseline = sample("importance", artifact, energy, n=4000, seed=7, pool=64000)
    assert _gaussian_kl(baseline.images, mean, var) < 0.01


def test_constraint_lambda_is_refitted_on_the_proposals_to_meet_its_moments():
    constraint = ConstraintEnergy("dist", ("side",), (0.2, 0.8), "dist(side, left=0.2, right=0.8)")
    energy = StageEnergy([], [constraint], SideAttribute())
    artifact = _artifact(_perturbed_flow(seed=3, scale=0.2))
    for name in ("importance", "flow+sir", "flow+imh"):
        result = sample(name, artifact, energy, n=6000, seed=8)
        share = float(SideAttribute()(result.images)["side"].exp()[:, 1].mean())
        assert abs(share - 0.8) < 0.02, (name, share)
        assert result.stats["lambda_fit"]["max_moment_error"] < 1e-3


def test_same_seed_same_samples_and_latents_only_without_decoding():
    energy, _, _ = _quadratic()
    artifact = _artifact(_perturbed_flow())
    for name in SAMPLERS:
        options = {"steps": 3} if name in ("langevin", "mala") else {}
        source = artifact if name.startswith("flow") else PointGenerator()
        bound = {"e_min": 0.0} if name == "rejection" else {}
        a = sample(name, source, energy, n=32, seed=9, **options, **bound)
        b = sample(name, source, energy, n=32, seed=9, decode=False, **options, **bound)
        assert torch.equal(a.latents, b.latents), name
        assert b.images is None and a.stats["sampler"] == name and len(a.latents) == 32


def test_errors_name_the_problem():
    energy, _, _ = _quadratic()
    with pytest.raises(SamplerError, match=re.escape("unknown sampler 'flow+sri'")) as info:
        sample("flow+sri", PointGenerator(), energy, n=4)
    assert "flow+sir" in info.value.hint
    with pytest.raises(SamplerError, match="needs a trained flow"):
        sample("flow+imh", PointGenerator(), energy, n=4)
    with pytest.raises(SamplerError, match="needs the program's energy"):
        sample("importance", PointGenerator(), None, n=4)
    with pytest.raises(SamplerError, match="'flow' does not take the option 'pool'"):
        sample("flow", _artifact(_perturbed_flow()), n=4, pool=3)
    # The check comes from each sampler's declared options, before anything is drawn.
    with pytest.raises(SamplerError, match="'importance' does not take the option 'pol'") as info:
        sample("importance", PointGenerator(), energy, n=4, pol=3)
    assert "did you mean 'pool'" in info.value.hint
    with pytest.raises(SamplerError, match="'mala' does not take the option 'metropolis'"):
        sample("mala", PointGenerator(), energy, n=4, metropolis=False)
    # Values of the wrong kind, as `--option pool=abc` passes them, are refused up front.
    for options, message in (({"pool": "abc"}, "pool='abc' is not a count"),
                             ({"pool": -3}, "pool=-3 is not a count"),
                             ({"pool": True}, "pool=True is not a count")):
        with pytest.raises(SamplerError, match=re.escape(message)):
            sample("importance", PointGenerator(), energy, n=4, **options)
    with pytest.raises(SamplerError, match="step_size=nan is not a number"):
        sample("langevin", PointGenerator(), energy, n=4, step_size=math.nan)
    with pytest.raises(SamplerError, match="e_min='low' is not a number or 'pilot'"):
        sample("rejection", PointGenerator(), energy, n=4, e_min="low")


def test_lower_bounds_of_composed_energies():
    right = PredicateEnergy(predicate_log_prob("side", 1), "right")
    left = PredicateEnergy(predicate_log_prob("side", 0), "left")
    constraint = ConstraintEnergy("uniform", ("side",), (0.5, 0.5), "uniform(side)")
    constraint.lam.copy_(torch.tensor([0.5, -1.0]))
    energy = StageEnergy([ScaledEnergy(2.0, SumEnergy([right, left], "r & l"), "2 * (r & l)"),
                          SoftOrEnergy([right, left], "r or l")], [constraint])
    assert energy_lower_bound(energy) == pytest.approx(-math.log(2) - 0.5)
    assert energy_lower_bound(stage(QuadraticEnergy(**QUADRATIC))) is None


def test_options_from_the_command_line_are_typed():
    assert parse_options(["pool=4096", "step-size=0.01", "e_min=pilot", "metropolis=True"]) == \
        {"pool": 4096, "step_size": 0.01, "e_min": "pilot", "metropolis": True}
    with pytest.raises(SamplerError, match="not KEY=VALUE"):
        parse_options(["pool"])


def test_stage_energy_of_an_artifact_carries_its_trained_lambda():
    from energyql.baselines import stage_energy
    from energyql.energies import ControlModels

    class Catalogued(PointGenerator):
        catalog = "shapes"

    flow = LatentFlow(FlowConfig(dim=2, blocks=1, width=4))
    sampler = StageSampler(Catalogued(), flow, 1, "uniform(size)")
    record = replace(stage_record(sampler), lam={"uniform(size)": (0.25, -0.25)})
    artifact = Artifact(sampler, manifest_for(sampler, source="uniform(size)", stages=(record,)))
    models = ControlModels("shapes", attributes=SideAttribute())
    energy = stage_energy(artifact, models=models)
    assert energy.constraints[0].lam.tolist() == [0.25, -0.25]
    with pytest.raises(SamplerError, match="2 stages"):
        stage_energy(Catalogued(), "size == small | then debias(size)", models=models)
