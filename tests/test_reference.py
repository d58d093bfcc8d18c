"""The exact-target reference: base samples pooled with the flow's, and the drift's error."""

import math

import pytest
import torch

from energyql.reference import Reference, balance_log_weights, drift

# A 1-D world: base N(0, 1), target the base above 1.5 (6.7 % of it), free attribute z > 2.
# Exact share of the attribute under the target: P(z > 2) / P(z > 1.5).
THRESHOLD, FREE = 1.5, 2.0


def _tail(x: float) -> float:
    return 0.5 * math.erfc(x / math.sqrt(2))


EXACT = _tail(FREE) / _tail(THRESHOLD)


def _normal_log_prob(z, mean=0.0, std=1.0):
    return -0.5 * ((z - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def _world(n_base: int, n_flow: int, mean: float, std: float, seed: int):
    """Base rows, flow rows from N(mean, std) and the reference pooling them."""
    rng = torch.Generator().manual_seed(seed)
    base = torch.randn(n_base, generator=rng, dtype=torch.float64)
    flow = mean + std * torch.randn(n_flow, generator=rng, dtype=torch.float64)

    def neg_energy(z):  # -E: 0 on the target, -30 off it (a sharp judge)
        return torch.where(z > THRESHOLD, 0.0, -30.0).double()

    def ratio(z):  # log q / p0
        return _normal_log_prob(z, mean, std) - _normal_log_prob(z)

    reference = Reference.pooled_with_flow(neg_energy(base), ratio(base), neg_energy(flow),
                                           ratio(flow))
    return base, flow, reference


def _share(values: torch.Tensor, log_weights: torch.Tensor) -> float:
    weights = torch.softmax(log_weights, 0)
    return float((weights * values.double()).sum())


def test_pooling_the_flow_gives_the_exact_share_with_many_more_effective_samples():
    base, flow, pooled = _world(4_000, 2_000, mean=2.0, std=0.5, seed=0)
    values = (torch.cat([base, flow]) > FREE).long()
    alone = Reference.from_base(torch.where(base > THRESHOLD, 0.0, -30.0).double())
    assert abs(_share(values, pooled.log_weights) - EXACT) < 0.03
    assert abs(_share(values[:4_000], alone.log_weights) - EXACT) < 0.1
    assert pooled.ess > 4 * alone.ess
    assert alone.ess == pytest.approx(float((base > THRESHOLD).sum()), rel=1e-6)


def test_a_flow_that_misses_part_of_the_target_still_gives_the_exact_share():
    # The flow sits on z > 2.5 only: the base rows carry the part it misses (1.5 to 2.5).
    shares = []
    for seed in range(5):
        base, flow, pooled = _world(20_000, 2_000, mean=3.0, std=0.25, seed=seed)
        shares.append(_share((torch.cat([base, flow]) > FREE).long(), pooled.log_weights))
    assert abs(sum(shares) / len(shares) - EXACT) < 0.03
    # Weighing the flow's rows by the flow alone would have put the share near 1.
    assert max(shares) < 0.6


def test_balance_weights_are_bounded_by_the_base_share():
    neg_energy = torch.zeros(5, dtype=torch.float64)
    ratio = torch.tensor([-50.0, -1.0, 0.0, 1.0, 50.0], dtype=torch.float64)
    weights = balance_log_weights(neg_energy, ratio, 100, 10).exp()
    assert bool((weights <= 1 / 100 + 1e-12).all())
    assert weights[2] == pytest.approx(1 / 110)
    with pytest.raises(ValueError, match="base rows"):
        balance_log_weights(neg_energy, ratio, 0, 10)


def test_the_drift_is_zero_for_exact_flow_rows_and_its_error_matches_repeated_runs():
    # An exact flow (the target's own law: the base above 1.5) over many repeats.
    tvs, errors = [], []
    for seed in range(12):
        rng = torch.Generator().manual_seed(100 + seed)
        base = torch.randn(4_000, generator=rng, dtype=torch.float64)
        exact_rows = torch.randn(20_000, generator=rng, dtype=torch.float64)
        ours = exact_rows[exact_rows > THRESHOLD][:400]
        reference = Reference.from_base(torch.where(base > THRESHOLD, 0.0, -30.0).double())
        tv, error = drift((ours > FREE).long(), (base > FREE).long(), reference, 2, seed=seed)
        tvs.append(tv)
        errors.append(error)
    spread = float(torch.tensor(tvs).pow(2).mean().sqrt())  # the TV's scale when nothing drifts
    mean_error = sum(errors) / len(errors)
    assert 0.5 < mean_error / spread < 2.0
    assert max(tvs) < 0.2


def test_a_real_drift_stands_out_of_its_error():
    rng = torch.Generator().manual_seed(7)
    base = torch.randn(20_000, generator=rng, dtype=torch.float64)
    reference = Reference.from_base(torch.where(base > THRESHOLD, 0.0, -30.0).double())
    ours = torch.ones(500, dtype=torch.long)  # every row above 2: TV = 1 - EXACT
    tv, error = drift(ours, (base > FREE).long(), reference, 2)
    assert tv == pytest.approx(1 - EXACT, abs=0.05)
    assert tv > 10 * error


def test_drift_refuses_rows_that_do_not_match_the_reference():
    _, flow, pooled = _world(100, 20, mean=2.0, std=0.5, seed=0)
    with pytest.raises(ValueError, match="reference values"):
        drift(torch.zeros(20, dtype=torch.long), torch.zeros(5, dtype=torch.long), pooled, 2)
    with pytest.raises(ValueError, match="own rows"):
        drift(torch.zeros(7, dtype=torch.long), torch.zeros(120, dtype=torch.long), pooled, 2)


@pytest.fixture(scope="module")
def tiny_artifact():
    import energyql as eq

    return eq.train("color == red", gen="shapes", steps=2, batch=8, warm_start_samples=0,
                    progress=False, threads=1)


def test_judged_flow_rows_carry_their_density_ratio_to_the_base(tiny_artifact):
    import energyql as eq
    from energyql.energies import ControlModels, lower_stage
    from energyql.evaluation import judge

    sampler = tiny_artifact.sampler
    program = eq.compile("color == red", gen="shapes")
    energy = lower_stage(program.stages[0], ControlModels("shapes")).eval()
    judged = judge(sampler, 48, ControlModels("shapes"), [energy], keep_latents=True)
    with torch.no_grad():
        expected = sampler.flow.log_prob(judged.latents) - sampler.root.log_prior(judged.latents)
    assert judged.log_q_over_p0 is not None and judged.latents.shape == (48, sampler.latent_dim)
    assert torch.allclose(judged.log_q_over_p0, expected, atol=2e-3)
    assert float(expected.abs().max()) > 0.05  # the flow is not the base: the check can fail


def test_evaluate_pools_the_flow_into_the_exact_target_and_gives_each_drift_an_error(
        tiny_artifact):
    from energyql.evaluation import evaluate

    drift_record = evaluate(tiny_artifact, samples=64, base_samples=256)["truth"][
        "collateral_drift"]
    assert drift_record["flow_samples"] == 64 and drift_record["base_samples"] == 256
    assert drift_record["reference_ess"] > drift_record["base_ess"]
    assert set(drift_record["tv_se"]) == set(drift_record["tv"]) == {"shape", "size"}
    assert all(0 < error < 0.5 for error in drift_record["tv_se"].values())
