"""A short training run on each new family (random small weights, the shapes CLIP) and back."""

import json

import pytest
import torch

import energyql
from energyql.sampler import load
from energyql.training import TrainConfig
from tests.generators.biggan_helpers import seeded_network

TINY = TrainConfig(steps=3, batch=2, blocks=2, width=8, clip_copies=1, warm_start_steps=0,
                   checkpoint_every=100, threads=1)


def _train_and_reload(gen: str, out, monkeypatch, **options):
    monkeypatch.setenv("ENERGYQL_CLIP", "shapes-clip")  # a small CLIP that ships with energyql
    artifact = energyql.train('clip("a red circle")', gen=gen, config=TINY, out=out,
                              progress=False, generator_options=options)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["generator"]["id"] == gen
    assert len(manifest["stages"]) == 1 and len(artifact.sampler.stages) == 1
    reloaded = load(out)  # rebuilt from the manifest's generator id and options alone
    first, again = artifact.sample(2, seed=4), reloaded.sample(2, seed=4)
    assert torch.allclose(first, again, atol=1e-5)
    return manifest, reloaded, first


def test_diffusion_trains_and_samples_from_its_artifact(tmp_path, monkeypatch):
    diffusers = pytest.importorskip("diffusers")
    from tests.generators.diffusion_helpers import tiny_unet

    folder = tmp_path / "pipe"
    diffusers.DDIMPipeline(unet=tiny_unet(size=16),
                           scheduler=diffusers.DDIMScheduler(num_train_timesteps=50)
                           ).save_pretrained(folder)
    manifest, reloaded, images = _train_and_reload(f"diffusers:{folder}", tmp_path / "run",
                                                   monkeypatch, steps=3)
    assert manifest["generator"]["options"] == {"steps": 3}
    assert reloaded.sampler.root.steps == 3 and len(reloaded.sampler.root.schedule) == 3
    assert images.shape == (2, 3, 16, 16) and manifest["generator"]["latent_dim"] == 768


def test_biggan_trains_and_samples_from_its_artifact(tmp_path, monkeypatch):
    net = seeded_network("deep32")
    folder = tmp_path / "bg"
    folder.mkdir()
    torch.save(net.state_dict(), folder / "pytorch_model.bin")
    (folder / "config.json").write_text(json.dumps(net.config.to_dict()))
    manifest, reloaded, images = _train_and_reload(f"biggan:{folder}", tmp_path / "run",
                                                   monkeypatch, truncation=0.5)
    assert manifest["generator"]["options"] == {"truncation": 0.5}
    assert reloaded.sampler.root.truncation == 0.5
    assert images.shape == (2, 3, 32, 32) and manifest["generator"]["latent_dim"] == 32
