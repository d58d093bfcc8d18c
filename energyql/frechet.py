"""Fréchet distances between sets of images: Inception FID and the embedded worlds' own.

The Fréchet distance between Gaussians fitted to two feature sets,

    d² = |μa − μb|² + tr(Σa) + tr(Σb) − 2 tr((Σa^½ Σb Σa^½)^½)

measures sample quality and mode collapse together (a collapsed sampler has a small Σ).

- :func:`frechet_distance` works on any two feature matrices.
- :func:`inception_fid` is the usual FID: InceptionV3 pool features through torch-fidelity
  (``pip install 'energyql[fid]'``), with weights from the cache (``hub`` key ``inception-fid``)
  or a given file; offline and without the file it raises ``WeightsMissingError``.
- :func:`world_frechet` works offline on an embedded world: features of the world's own
  classifier, controlled samples against exact-target samples (SIR over the base generator),
  with the base generator's distance as the scale.

This module imports torch only inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from energyql import hub
from energyql.errors import (
    CheckpointError,
    UsageError,
    WeightsMissingError,
    check_choice,
)

INCEPTION = "inception-fid"
hub.register(hub.Weights(
    INCEPTION, "weights-inception-2015-12-05-6726825d.pth",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
    "weights-inception-2015-12-05-6726825d.pth", None,
    "InceptionV3 with the TensorFlow FID weights, in PyTorch layout",
    "torch-fidelity release v0.2.0"))

REFERENCE_SAMPLERS = ("importance", "flow+sir")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def gaussian_frechet(mean_a, cov_a, mean_b, cov_b) -> float:
    """Return the Fréchet distance d² between N(mean_a, cov_a) and N(mean_b, cov_b).

    Computed in float64 through the symmetric form Σa^½ Σb Σa^½ (eigendecompositions only, no
    general matrix square root), so no imaginary parts arise; round-off negatives are clipped.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.atleast_2d(cov_a).astype(np.float64), np.atleast_2d(cov_b).astype(np.float64)
    if mean_a.shape != mean_b.shape or cov_a.shape != cov_b.shape:
        raise UsageError(f"feature dimensions differ: {mean_a.shape} and {mean_b.shape}",
                         hint="compare features from the same extractor")
    values, vectors = np.linalg.eigh((cov_a + cov_a.T) / 2)
    root_a = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = root_a @ cov_b @ root_a
    cross = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    distance = float(np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b)
                     - 2 * cross)
    return max(distance, 0.0)


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """Return the mean and (unbiased) covariance of a ``(N, D)`` feature matrix, in float64."""
    features = _matrix(features)
    if len(features) < 2:
        raise UsageError("a Fréchet distance needs at least 2 samples per set, "
                         f"got {len(features)}", hint="sample more images")
    return features.mean(axis=0), np.cov(features, rowvar=False).reshape(features.shape[1], -1)


def frechet_distance(features_a, features_b) -> float:
    """Return the Fréchet distance between Gaussians fitted to two ``(N, D)`` feature sets."""
    return gaussian_frechet(*feature_stats(features_a), *feature_stats(features_b))


def _matrix(features) -> np.ndarray:
    if hasattr(features, "detach"):
        features = features.detach().cpu().double().numpy()
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise UsageError(f"features must be a (samples, dimensions) matrix, got shape "
                         f"{features.shape}", hint="flatten each sample's features to one row")
    return features


# --------------------------------------------------------------------------- Inception FID


def inception(weights: str | Path | None = None, *, device: str = "cpu", download: bool = True):
    """Return torch-fidelity's InceptionV3 feature extractor (2048-d pool features).

    ``weights`` is a local file; default: the cache's ``inception-fid`` file, downloaded when
    missing unless offline (then ``WeightsMissingError`` says where to put it).
    """
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import (
            FeatureExtractorInceptionV3,
        )
    except ImportError:
        raise UsageError("FID needs the torch-fidelity package, which is not installed",
                         hint="pip install 'energyql[fid]'") from None
    if weights is None:
        path = hub.path(INCEPTION, download=download)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsMissingError(
                f"Inception weights '{weights}' are not a file",
                hint=f"get them with: {hub.fetch_command(INCEPTION)}  (then omit the path)")
    _check_state_dict(path)
    extractor = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                            feature_extractor_weights_path=str(path))
    return extractor.to(device)


def _check_state_dict(path: Path) -> None:
    # torch-fidelity unpickles the file without restrictions; read it safely first so that a
    # file holding code is refused before that happens.
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means "not a plain state dict"
        raise CheckpointError(f"'{path}' is not a plain PyTorch state dict: {error}",
                              hint=f"get the Inception weights with: "
                                   f"{hub.fetch_command(INCEPTION)}") from None
    if not isinstance(state, dict) or "fc.weight" not in state:
        raise CheckpointError(f"'{path}' does not hold InceptionV3 weights (no 'fc.weight')",
                              hint=f"get them with: {hub.fetch_command(INCEPTION)}")


def inception_features(images, extractor, *, batch: int = 64) -> np.ndarray:
    """Return ``(N, 2048)`` Inception features of images in [0, 1], shape ``(N, 3, H, W)``."""
    import torch

    device = next(extractor.parameters()).device
    rows = []
    with torch.no_grad():
        for chunk in images.split(batch):
            pixels = (chunk.clamp(0, 1) * 255).round().to(torch.uint8).to(device)
            rows.append(extractor(pixels)[0].double().cpu())
    return torch.cat(rows).numpy()


def load_images(folder: str | Path, *, limit: int | None = None):
    """Return the images of a folder (png/jpg/...) as one float tensor in [0, 1]."""
    import torch
    from PIL import Image

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES) \
        if folder.is_dir() else []
    if not files:
        raise UsageError(f"no images in '{folder}'",
                         hint="give a folder of .png/.jpg files or an .npz with 'mu' and 'sigma'")
    images = []
    for file in files[:limit]:
        with Image.open(file) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255
        images.append(torch.from_numpy(array).permute(2, 0, 1))
    sizes = {tuple(image.shape) for image in images}
    if len(sizes) > 1:
        raise UsageError(f"images in '{folder}' have different sizes: {sorted(sizes)[:3]}",
                         hint="resize them to one size first")
    return torch.stack(images)


def reference_stats(reference: str | Path, extractor=None, *, batch: int = 64):
    """Return Inception (mean, covariance) of a reference: an ``.npz`` (mu, sigma) or a folder."""
    reference = Path(reference)
    if reference.suffix == ".npz":
        with np.load(reference) as data:
            if not {"mu", "sigma"} <= set(data.files):
                raise UsageError(f"'{reference}' has no 'mu' and 'sigma' arrays",
                                 hint="save reference statistics with np.savez(path, mu=, sigma=)")
            return data["mu"].astype(np.float64), data["sigma"].astype(np.float64)
    extractor = extractor if extractor is not None else inception()
    return feature_stats(inception_features(load_images(reference), extractor, batch=batch))


def inception_fid(images, reference, *, weights: str | Path | None = None, device: str = "cpu",
                  batch: int = 64, extractor=None) -> float:
    """Return the FID of images in [0, 1] against ``reference``.

    ``reference`` is another image tensor, a folder of images, or an ``.npz`` with ``mu`` and
    ``sigma`` (Inception pool statistics).
    """
    extractor = extractor if extractor is not None else inception(weights, device=device)
    stats = feature_stats(inception_features(images, extractor, batch=batch))
    if isinstance(reference, (str, Path)):
        other = reference_stats(reference, extractor, batch=batch)
    else:
        other = feature_stats(inception_features(reference, extractor, batch=batch))
    return gaussian_frechet(*stats, *other)


# --------------------------------------------------------------------------- embedded worlds


def world_feature_worlds() -> list[str]:
    """Return the registered worlds whose record names a feature model, by name."""
    from energyql.worlds import registered

    return [name for name, world in registered().items() if world.features is not None]


def world_feature_function(world: str) -> Callable:
    """Return the function computing judge features for an embedded world's images."""
    from energyql.worlds import registered

    record = registered().get(world)
    if record is None or record.features is None:
        raise UsageError(f"world '{world}' has no feature model for a Fréchet distance",
                         hint="embedded worlds with one: " + ", ".join(world_feature_worlds())
                         + "; for other generators use the Inception FID (--fid REF)")
    return record.feature_function()


def world_frechet(artifact, samples: int = 1000, seed: int = 0, device: str = "cpu", *,
                  reference: str = "importance", pool: int | None = None) -> dict:
    """Return the Fréchet distances, in the world classifier's feature space, to the target.

    The exact target of the artifact's last stage is sampled by ``reference`` (SIR over its
    base, or SIR with the flow as the proposal); its effective sample size says how much the
    reference can be trusted. Returned: ``frechet`` (controlled samples vs the reference),
    ``base_frechet`` (the root generator's samples vs the reference: the scale),
    ``reference``, ``ess``, ``ess_fraction``, ``samples`` and ``feature_dim``. For a
    multi-stage artifact the reference is the last stage's exact target over the stage before
    it (see :mod:`energyql.baselines`), and the scale is still the root generator's.

    Example:
        >>> world_frechet(energyql.load("runs/red"), samples=1000)  # doctest: +SKIP
        {'frechet': ..., 'base_frechet': ..., 'reference': 'importance', 'ess': ..., ...}
    """
    import torch

    from energyql.baselines import sample as sample_target

    check_choice(reference, REFERENCE_SAMPLERS, what="reference sampler")
    if samples < 2:
        raise UsageError(f"samples must be at least 2, got {samples}",
                         hint="ask for hundreds of samples: the covariances need them")
    root = artifact.sampler.root
    featurize = world_feature_function(str(root.catalog))
    options: dict[str, Any] = {"pool": pool} if pool is not None else {}
    target = sample_target(reference, artifact, n=samples, seed=seed + 1, device=device,
                           **options)
    with torch.no_grad():
        controlled = artifact.sample(samples, seed=seed)
        base = root.sample(samples, seed=seed + 2)
    to = torch.device(device)
    if target.images is None:  # cannot happen: sample() decodes by default
        raise RuntimeError(f"the '{reference}' reference sampler returned no images")
    exact = featurize(target.images.to(to))
    return {
        "frechet": frechet_distance(featurize(controlled.to(to)), exact),
        "base_frechet": frechet_distance(featurize(base.to(to)), exact),
        "reference": reference,
        "ess": float(target.stats.get("ess", float("nan"))),
        "ess_fraction": float(target.stats.get("ess_fraction", float("nan"))),
        "samples": samples,
        "feature_dim": int(exact.shape[1]),
    }
