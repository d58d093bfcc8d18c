"""CLIP specs, loading from local files and the cache, ensembles, text caching, offline errors."""

import pytest
import torch

from energyql.catalog import FACES
from energyql.controls.clip import (
    ClipEnsemble,
    ClipModel,
    default_clip_spec,
    load_clip,
    parse_clip_spec,
    pretrained_path,
    pretrained_weights,
)
from energyql.energies.base import Features
from energyql.energies.clip import ClipEnergy
from energyql.errors import EnergyQLError, WeightsMissingError
from energyql.worlds.shapes import CATALOG as SHAPES


@pytest.mark.parametrize("spec, members", [
    ("ViT-B-32:openai", [(1.0, "ViT-B-32", "openai")]),
    ("ViT-B-32:openai+0.5*RN50:openai", [(1.0, "ViT-B-32", "openai"), (0.5, "RN50", "openai")]),
    (" 2 * ViT-B-32:openai + .25*RN50:/w/rn.pt ",
     [(2.0, "ViT-B-32", "openai"), (0.25, "RN50", "/w/rn.pt")]),
    ("local-dir:/models/mine", [(1.0, "local-dir", "/models/mine")]),
    ("shapes-clip", [(1.0, "shapes-clip", "")]),
])
def test_parse_clip_spec(spec, members):
    assert [(m.weight, m.name, m.source) for m in parse_clip_spec(spec)] == members


@pytest.mark.parametrize("spec, message", [
    ("ViT-B-32:openai + ", "empty member"),
    ("0*ViT-B-32:openai", "positive"),
    ("ViT-B-32", "names no weights"),
])
def test_bad_clip_specs(spec, message):
    with pytest.raises(EnergyQLError, match=message):
        parse_clip_spec(spec)


def test_name_with_local_checkpoint(tiny_clip):
    name, checkpoint, _ = tiny_clip
    model = load_clip(f"{name}:{checkpoint}")
    assert isinstance(model, ClipModel) and model.image_size == 32
    images = torch.rand(3, 3, 48, 48, requires_grad=True)
    embedding = model.encode_image(images)
    assert embedding.shape == (3, 16)
    assert torch.allclose(embedding.norm(dim=-1), torch.ones(3), atol=1e-5)
    embedding.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert load_clip(f"{name}:{checkpoint}") is model  # loaded once


def test_local_dir_loads_any_architecture(tiny_clip):
    name, checkpoint, folder = tiny_clip
    by_dir, by_name = load_clip(f"local-dir:{folder}"), load_clip(f"{name}:{checkpoint}")
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(by_dir.encode_image(images), by_name.encode_image(images), atol=1e-5)


def test_text_features_are_computed_once(tiny_clip, monkeypatch):
    name, checkpoint, _ = tiny_clip
    model = load_clip(f"{name}:{checkpoint}")
    model._text_cache.clear()
    calls = []
    tokenizer = model.tokenizer
    monkeypatch.setattr(model, "tokenizer",
                        lambda texts: calls.append(list(texts)) or tokenizer(texts))
    first = model.encode_text(["a smiling man", "a dog", "a smiling man"])
    again = model.encode_text(["a dog", "a smiling man"])
    assert calls == [["a smiling man", "a dog"]]
    assert torch.equal(first[1], again[0]) and torch.equal(first[0], first[2])


def test_ensemble_energy_is_the_weighted_mean_of_member_energies(tiny_clip):
    name, checkpoint, folder = tiny_clip
    spec = f"{name}:{checkpoint} + 3*local-dir:{folder}"
    ensemble = load_clip(spec)
    assert isinstance(ensemble, ClipEnsemble) and ensemble.weights == [0.25, 0.75]
    images = torch.rand(2, 3, 32, 32)
    assert torch.allclose(ensemble.encode_image(images).norm(dim=-1), torch.ones(2), atol=1e-5)

    def energy(model):
        term = ClipEnergy(model, "a smiling man", copies=2)
        return term(Features(images, generator=torch.Generator().manual_seed(0)))

    members = [load_clip(f"{name}:{checkpoint}"), load_clip(f"local-dir:{folder}")]
    expected = 0.25 * energy(members[0]) + 0.75 * energy(members[1])
    assert torch.allclose(energy(ensemble), expected, atol=1e-4)


def test_world_default_can_be_replaced(tiny_clip, monkeypatch):
    name, checkpoint, _ = tiny_clip
    monkeypatch.setenv("ENERGYQL_CLIP", f"{name}:{checkpoint}")
    assert default_clip_spec(FACES) == f"{name}:{checkpoint}"
    # The override reaches every user of the world's default through ControlModels.
    from energyql.energies.lower import ControlModels

    assert ControlModels(FACES).clip(None) is load_clip(f"{name}:{checkpoint}")
    monkeypatch.delenv("ENERGYQL_CLIP")
    assert default_clip_spec(FACES) == "ViT-B-32:openai"
    assert default_clip_spec(SHAPES) == "shapes-clip"


def test_missing_pretrained_weights_offline_name_file_place_and_command(offline_cache, hf_cache):
    with pytest.raises(WeightsMissingError) as caught:
        load_clip("ViT-B-32:openai")
    error = caught.value
    assert "open_clip_model.safetensors of timm/vit_base_patch32_clip_224.openai" in error.message
    assert f"Hugging Face cache {hf_cache}; downloads are off (ENERGYQL_OFFLINE)" in error.message
    assert (f"hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors "
            f"--cache-dir {hf_cache}") in error.hint
    assert "ViT-B-32-quickgelu:/path/to/checkpoint" in error.hint
    assert not offline_cache.exists() and not hf_cache.exists()  # nothing written


def test_unknown_tag_architecture_and_path(offline_cache):
    with pytest.raises(WeightsMissingError, match="known tags: .*openai"):
        load_clip("ViT-B-32:openia")
    with pytest.raises(EnergyQLError, match="did you mean 'ViT-B-32'"):
        load_clip("ViT-B-23:openai")
    with pytest.raises(WeightsMissingError, match="not found"):
        load_clip("ViT-B-32:/nowhere/weights.safetensors")
    with pytest.raises(WeightsMissingError, match="open_clip_config.json"):
        load_clip(f"local-dir:{offline_cache}")


def test_checkpoint_that_does_not_fit_fails_clearly(tiny_clip, tmp_path):
    name, _, _ = tiny_clip
    bad = tmp_path / "bad.safetensors"
    from safetensors.torch import save_file
    save_file({"visual.conv1.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(EnergyQLError, match="could not load CLIP"):
        load_clip(f"{name}:{bad}")


def test_cached_tag_file_is_found_and_tags_follow_quick_gelu(offline_cache, tiny_clip, monkeypatch):
    name, checkpoint, _ = tiny_clip
    weights = pretrained_weights("ViT-B-32", "openai")
    assert weights.repo == "timm/vit_base_patch32_clip_224.openai"
    assert weights.filenames == ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
    assert [f.name for f in weights.folder_files()] == [*weights.filenames, "ViT-B-32.pt"]
    assert weights.folder == offline_cache / "clip" / "ViT-B-32" / "openai"
    # A tag of the tiny architecture, trained with QuickGELU, whose file is already cached.
    cfg = {"hf_hub": "someone/tiny-clip/", "quick_gelu": True, "mean": (0.5, 0.5, 0.5),
           "std": (0.5, 0.5, 0.5)}
    monkeypatch.setattr("open_clip.get_pretrained_cfg",
                        lambda n, t: cfg if (n, t) == (name, "mytag") else {})
    cached = offline_cache / "clip" / name / "mytag" / "open_clip_model.safetensors"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(checkpoint.read_bytes())
    model = load_clip(f"{name}:mytag")
    assert type(model.model.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert model.mean.flatten().tolist() == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("served", ["page.html", "absent.bin"])
def test_a_url_only_tag_is_downloaded_atomically_and_checked(tmp_path, monkeypatch, tiny_clip,
                                                            hf_cache, served):
    name, checkpoint, _ = tiny_clip
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ENERGYQL_OFFLINE", raising=False)
    (tmp_path / "page.html").write_bytes(b"<html>moved</html>")
    cfg = {"url": (tmp_path / served).as_uri()}  # a tag with no hub repository
    monkeypatch.setattr("open_clip.get_pretrained_cfg", lambda n, t: cfg)
    monkeypatch.setattr("huggingface_hub.hf_hub_download", None)  # never asked
    assert pretrained_weights(name, "tag").repo is None
    with pytest.raises(WeightsMissingError, match="could not be downloaded") as caught:
        pretrained_path(name, "tag")
    assert "curl -L -o" in caught.value.hint and cfg["url"] in caught.value.hint
    assert not (tmp_path / "cache").exists()  # no partial files, not even empty folders
    cfg["url"] = checkpoint.as_uri()
    file = pretrained_path(name, "tag")
    assert file == tmp_path / "cache" / "clip" / name / "tag" / checkpoint.name
    assert file.read_bytes() == checkpoint.read_bytes() and not hf_cache.exists()


def test_logit_scale_and_augment_options(tiny_clip):
    name, checkpoint, _ = tiny_clip
    model = load_clip(f"{name}:{checkpoint}")
    assert model.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)
    assert model.augment_options["cutout"] > 0 and model.augment_options["saturation"] > 0


def test_an_expression_names_an_ensemble_in_its_model_option(tiny_clip):
    import energyql
    from energyql.energies import ControlModels, lower_stage

    name, checkpoint, folder = tiny_clip
    models = f"{name}:{checkpoint} + 0.5*local-dir:{folder}"
    source = f'clip("a smiling man", model="{models}", augment=2)'
    stage = energyql.compile(source, gen="stylegan2-ffhq").stages[0]
    energy = lower_stage(stage, ControlModels(FACES))
    assert isinstance(energy.pointwise[0].clip, ClipEnsemble)
    total, _ = energy(torch.rand(2, 3, 32, 32), torch.Generator().manual_seed(0))
    assert total.shape == (2,) and torch.isfinite(total).all()
