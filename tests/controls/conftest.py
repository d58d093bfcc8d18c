"""Shared tiny control models (random weights in local files) for the control-model tests."""

import pytest

from tests.controls.helpers import register_tiny_clip, save_tiny_clip_checkpoint, save_tiny_clip_dir


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """``(name, checkpoint path, local-dir folder)`` of the tiny random CLIP."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    name = register_tiny_clip(folder)
    return (name, save_tiny_clip_checkpoint(folder / "tiny.safetensors"),
            save_tiny_clip_dir(folder / "dir"))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in ``tmp_path/hf/hub``, with the hub's offline mode off.

    ``HF_HOME`` and ``HF_HUB_CACHE`` point there. huggingface_hub reads them once, when it is
    imported, into ``huggingface_hub.constants``, which is what ``hf_hub_download`` uses; those
    are set as well, as an import in a fresh process would set them.
    """
    from huggingface_hub import constants

    home = tmp_path / "hf"
    for name, value in (("HF_HOME", home), ("HF_HUB_CACHE", home / "hub")):
        monkeypatch.setenv(name, str(value))
        monkeypatch.setattr(constants, name, str(value))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return home / "hub"


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, hf_cache):
    """An empty energyql cache (and Hugging Face cache) with downloads off and no CLIP override."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENERGYQL_CACHE", str(cache))
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    for name in ("ENERGYQL_CLIP", "ENERGYQL_FACE_ATTRIBUTES", "ENERGYQL_FACENET"):
        monkeypatch.delenv(name, raising=False)
    return cache
