"""Artifacts: stage chaining, save/load round trip, refusal of mismatched generators."""

import json

import pytest
import torch

import energyql as eq
from energyql.sampler import StageSampler
from energyql.training import TrainConfig
from tests.toys import TinyImageGenerator, register_tiny

CONFIG = TrainConfig(steps=4, batch=8, blocks=2, width=16, moment_samples=256, refit_every=0)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    register_tiny()
    out = tmp_path_factory.mktemp("art")
    art = eq.train("color == red | then uniform(size)", gen="toy-shapes", config=CONFIG, out=out,
                   progress=False)
    return art, out


def test_stages_chain_each_on_the_previous_sampler(artifact):
    art, _ = artifact
    second = art.sampler
    assert isinstance(second, StageSampler) and isinstance(second.base, StageSampler)
    assert [s.index for s in second.stages] == [1, 2]
    assert isinstance(second.root, TinyImageGenerator)
    eps = torch.randn(3, second.latent_dim)
    with torch.no_grad():
        expected = second.root.decode(second.base.flow(second.flow(eps)[0])[0])
        assert torch.allclose(second.decode(eps), expected)


def test_loaded_artifact_gives_identical_samples_for_a_seed(artifact):
    art, out = artifact
    loaded = eq.load(out)
    assert torch.equal(loaded.sample(6, seed=11), art.sample(6, seed=11))
    assert not torch.equal(loaded.sample(6, seed=12), art.sample(6, seed=11))
    assert loaded.manifest.canonical == "color == red | then uniform(size)"


def test_a_loaded_sampler_is_a_generator_that_can_be_trained_on(artifact, tmp_path):
    _, out = artifact
    more = eq.train("uniform(shape)", gen=eq.load(out).sampler, config=CONFIG, progress=False,
                    out=tmp_path)
    assert [s.index for s in more.sampler.stages] == [1, 2, 3]
    assert more.manifest.canonical == "color == red | then uniform(size) | then uniform(shape)"
    assert torch.equal(eq.load(tmp_path).sample(4, seed=1), more.sample(4, seed=1))


def test_loading_refuses_a_generator_with_other_weights(artifact, tmp_path):
    _, out = artifact
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["generator"]["weights_digest"] = "0" * 64
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "manifest.json").write_text(json.dumps(manifest))
    (copy / "flows.safetensors").write_bytes((out / "flows.safetensors").read_bytes())
    with pytest.raises(eq.ArtifactError, match="weights"):
        eq.load(copy)


def test_incomplete_artifact_is_a_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(eq.ArtifactError, match="not valid JSON"):
        eq.load(tmp_path)
