"""Fréchet distances: closed forms for Gaussians, the Inception FID path on a random-weight
network (no download), offline errors, and the feature-space distance on the shapes world."""

import numpy as np
import pytest
import scipy.linalg
import torch

from energyql import frechet
from energyql.errors import CheckpointError, UsageError, WeightsMissingError


def _random_covariance(rng, dim):
    a = rng.normal(size=(dim, dim))
    return a @ a.T + 0.1 * np.eye(dim)


def test_diagonal_gaussians_match_the_closed_form():
    mean_a, mean_b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mean_a - mean_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = frechet.gaussian_frechet(mean_a, np.diag(var_a), mean_b, np.diag(var_b))
    assert got == pytest.approx(expected, rel=1e-12)


def test_full_covariances_match_the_matrix_square_root_formula():
    rng = np.random.default_rng(0)
    cov_a, cov_b = _random_covariance(rng, 6), _random_covariance(rng, 6)
    mean_a, mean_b = rng.normal(size=6), rng.normal(size=6)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    expected = (np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                - 2 * np.trace(root).real)
    got = frechet.gaussian_frechet(mean_a, cov_a, mean_b, cov_b)
    assert got == pytest.approx(expected, rel=1e-9)
    assert got == pytest.approx(frechet.gaussian_frechet(mean_b, cov_b, mean_a, cov_a), rel=1e-9)


def test_identical_gaussians_are_at_distance_zero_even_when_singular():
    rng = np.random.default_rng(1)
    low_rank = rng.normal(size=(8, 3))
    cov = low_rank @ low_rank.T  # rank 3 of 8, as with fewer samples than features
    assert frechet.gaussian_frechet(np.ones(8), cov, np.ones(8), cov) == pytest.approx(0, abs=1e-9)


def test_samples_estimate_the_distance_between_their_gaussians():
    rng = np.random.default_rng(2)
    cov_a, cov_b = _random_covariance(rng, 4), _random_covariance(rng, 4)
    mean_a, mean_b = np.zeros(4), np.full(4, 0.5)
    a = rng.multivariate_normal(mean_a, cov_a, size=200_000)
    b = rng.multivariate_normal(mean_b, cov_b, size=200_000)
    exact = frechet.gaussian_frechet(mean_a, cov_a, mean_b, cov_b)
    assert frechet.frechet_distance(a, b) == pytest.approx(exact, rel=0.02)
    same = frechet.frechet_distance(torch.from_numpy(a[:500]), a[:500])
    assert same == pytest.approx(0, abs=1e-9)


def test_bad_feature_shapes_are_usage_errors():
    with pytest.raises(UsageError, match="feature dimensions differ"):
        frechet.frechet_distance(np.zeros((5, 3)), np.zeros((5, 4)))
    with pytest.raises(UsageError, match="at least 2 samples"):
        frechet.frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(UsageError, match="matrix"):
        frechet.frechet_distance(np.zeros(5), np.zeros(5))


# --------------------------------------------------------------------------- Inception FID


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory):
    """A state dict of a randomly initialised torch-fidelity InceptionV3 (nothing downloaded)."""
    from unittest import mock

    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    folder = tmp_path_factory.mktemp("inception")
    empty = folder / "empty.pth"
    torch.save({}, empty)
    torch.manual_seed(0)
    # Build the architecture without loading weights: its constructor always loads a state dict.
    with mock.patch.object(FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd: None):
        network = FeatureExtractorInceptionV3("random", ["2048"],
                                              feature_extractor_weights_path=str(empty))
    path = folder / "inception-random.pth"
    torch.save(network.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def random_inception(random_inception_weights):
    """The library's extractor, loaded through its real path from the random weights file."""
    return frechet.inception(random_inception_weights)


def _eight_bit(seed, n, scale=1.0):
    """Random images on the 8-bit grid, so that a PNG round trip is exact."""
    pixels = torch.randint(0, 256, (n, 3, 16, 16), generator=torch.Generator().manual_seed(seed))
    return (pixels.float() * scale).round() / 255


def test_fid_runs_on_a_random_weight_inception(random_inception, tmp_path):
    a, b = _eight_bit(0, 2), _eight_bit(1, 2, scale=0.3)  # b darker: other statistics
    features_a = frechet.inception_features(a, random_inception)
    features_b = frechet.inception_features(b, random_inception)
    assert features_a.shape == (2, 2048) and np.isfinite(features_a).all()
    expected = frechet.frechet_distance(features_a, features_b)
    assert expected > 0
    stored = tmp_path / "b.npz"
    mu, sigma = frechet.feature_stats(features_b)
    np.savez(stored, mu=mu, sigma=sigma)
    assert frechet.inception_fid(a, stored, extractor=random_inception) == pytest.approx(
        expected, rel=1e-9)


@pytest.mark.slow
def test_fid_against_a_folder_of_images_and_another_tensor(random_inception, tmp_path):
    from PIL import Image

    images, other = _eight_bit(3, 2), _eight_bit(4, 2, scale=0.5)
    for i, image in enumerate(images):
        pixels = (image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    assert frechet.inception_fid(images, tmp_path, extractor=random_inception) == pytest.approx(
        0, abs=1e-6)
    assert frechet.inception_fid(other, images, extractor=random_inception) > 0


def test_missing_inception_weights_offline_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as caught:
        frechet.inception()
    assert str(tmp_path) in caught.value.message and "inception-fid" in caught.value.message
    assert "curl" in caught.value.hint
    with pytest.raises(WeightsMissingError, match="not a file"):
        frechet.inception(tmp_path / "nowhere.pth")


def test_a_file_that_is_not_inception_weights_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="fc.weight"):
        frechet.inception(path)


# --------------------------------------------------------------------------- embedded worlds


@pytest.fixture(scope="module")
def red_artifact():
    """A briefly trained shapes sampler for 'color == red' (a third of the base is red)."""
    import energyql
    from energyql.training import TrainConfig

    config = TrainConfig(steps=30, batch=64, blocks=2, width=32, lr=5e-3)
    return energyql.train("color == red", gen="shapes", config=config, progress=False)


@pytest.mark.slow  # trains on the shapes world (about 10 s with the fixture)
def test_world_frechet_puts_the_controlled_sampler_closer_to_the_target_than_the_base(
        red_artifact):
    result = frechet.world_frechet(red_artifact, samples=128, seed=0, pool=1024)
    assert result["reference"] == "importance" and result["feature_dim"] == 128
    assert 0 < result["ess"] <= 1024 and 0 < result["ess_fraction"] <= 1
    assert 0 < result["frechet"] < result["base_frechet"]


@pytest.mark.slow  # shares the trained shapes artifact above
def test_world_features_of_a_set_against_itself_are_at_distance_zero(red_artifact):
    from energyql.worlds.shapes.classifier import features

    images = red_artifact.sample(64, seed=3)
    embedded = features(images)
    assert embedded.shape == (64, 128)
    assert frechet.frechet_distance(embedded, embedded) == pytest.approx(0, abs=1e-6)
    other = features(red_artifact.sampler.root.sample(64, seed=4))
    assert frechet.frechet_distance(embedded, other) > 1.0


def test_world_frechet_refuses_unknown_reference_samplers_and_worlds(red_artifact):
    with pytest.raises(UsageError, match="unknown reference sampler 'langevin'"):
        frechet.world_frechet(red_artifact, samples=8, reference="langevin")
    with pytest.raises(UsageError, match="no feature model") as caught:
        frechet.world_feature_function("faces")
    assert "--fid" in caught.value.hint
