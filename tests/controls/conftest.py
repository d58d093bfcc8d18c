"""Shared tiny control models (random weights in local files) for the control-model tests."""

import pytest

from tests.controls.helpers import register_tiny_clip, save_tiny_clip_checkpoint, save_tiny_clip_dir


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """``(name, checkpoint path, local-dir folder)`` of the tiny random CLIP."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    name = register_tiny_clip(folder)
    return name, save_tiny_clip_checkpoint(folder / "tiny.safetensors"), save_tiny_clip_dir(folder / "dir")


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty energyql cache with downloads off and no CLIP override."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENERGYQL_CACHE", str(cache))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    for name in ("ENERGYQL_CLIP", "ENERGYQL_FACE_ATTRIBUTES", "ENERGYQL_FACENET"):
        monkeypatch.delenv(name, raising=False)
    return cache
