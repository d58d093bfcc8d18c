import torch
import torch.nn.functional as F

from energyql.moments import effective_sample_size, fit_lambda


def test_fit_recovers_the_tilt_that_makes_a_categorical_uniform():
    p = torch.tensor([0.6, 0.3, 0.1])
    phi = F.one_hot(torch.arange(3), 3).float()
    # Exact weights instead of samples: rows are the three values, log-weights log p.
    fit = fit_lambda(phi, torch.full((3,), 1 / 3), p.log(), ridge=0.0)
    centred = fit.lam - fit.lam.mean()
    expected = -(p.log() - p.log().mean())
    assert torch.allclose(centred, expected, atol=1e-4)
    assert fit.max_error < 1e-5


def test_fit_on_samples_meets_the_target_and_reports_ess():
    generator = torch.Generator().manual_seed(0)
    labels = torch.multinomial(torch.tensor([0.5, 0.35, 0.15]), 20000, True, generator=generator)
    phi = F.one_hot(labels, 3).float()
    target = torch.tensor([0.2, 0.3, 0.5])
    fit = fit_lambda(phi, target)
    assert torch.allclose(fit.achieved, target, atol=1e-3)
    assert 0.3 * 20000 < fit.ess < 20000


def test_fit_with_pointwise_log_weights_targets_the_final_distribution():
    # Two binary features; pointwise weights already favour value 1 of the first feature.
    phi = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    log_w = torch.tensor([2.0, 0.0])
    fit = fit_lambda(phi, torch.tensor([0.5, 0.5]), log_w, ridge=0.0)
    tilted = torch.softmax(log_w + phi @ fit.lam, 0)
    assert torch.allclose(tilted, torch.tensor([0.5, 0.5]), atol=1e-5)


def test_unreachable_target_stays_finite():
    phi = F.one_hot(torch.tensor([0, 0, 1]), 3).float()  # value 2 never occurs
    fit = fit_lambda(phi, torch.full((3,), 1 / 3))
    assert torch.isfinite(fit.lam).all()


def test_ess_of_equal_weights_is_n():
    assert abs(effective_sample_size(torch.zeros(100)) - 100) < 1e-6
