"""The shapes training entry points (``--quick``) and the model card script."""

from __future__ import annotations

import json

import pytest
import torch

from energyql.worlds import read_safetensors
from energyql.worlds.shapes import card, train
from energyql.worlds.shapes import classifier as classifier_module
from energyql.worlds.shapes import generator as generator_module


def test_quick_training_runs_every_model_into_a_folder(tmp_path):
    threads = torch.get_num_threads()
    meta = train.main(["classifier", "--quick", "--out", str(tmp_path)])
    assert set(meta["accuracy"]) == {"shape", "color", "size"}
    classifier_module.load(path=tmp_path / "classifier.safetensors")

    train.main(["generator", "--quick", "--out", str(tmp_path)])
    gen = generator_module.load(path=tmp_path / "generator.safetensors")
    assert gen.decode(torch.zeros(2, gen.latent_dim)).shape == (2, 3, 32, 32)

    # The flow stage alone resumes from the shape field the previous run left.
    train.main(["generator", "--quick", "--stage", "flow", "--out", str(tmp_path)])

    train.main(["clip", "--quick", "--out", str(tmp_path)])
    assert (tmp_path / "clip.safetensors").is_file()
    assert torch.get_num_threads() == threads  # the thread flag does not leak


def test_quick_runs_are_deterministic(tmp_path):
    a = train.main(["classifier", "--quick", "--out", str(tmp_path / "a")])
    b = train.main(["classifier", "--quick", "--out", str(tmp_path / "b")])
    assert a["accuracy"] == b["accuracy"]
    state_a, _ = read_safetensors(tmp_path / "a" / "classifier.safetensors")
    state_b, _ = read_safetensors(tmp_path / "b" / "classifier.safetensors")
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_quick_run_never_touches_shipped_weights(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = classifier_module.WEIGHTS.stat().st_mtime_ns
    meta = train.main(["classifier", "--quick"])
    assert classifier_module.WEIGHTS.stat().st_mtime_ns == before
    assert list(tmp_path.glob("energyql-shapes-*/classifier.safetensors"))
    assert meta["steps"] == train.QUICK["classifier"]["steps"]


def test_card_prints_stable_keys(capsys):
    figures = card.main(["--json", "-n", "200", "--no-sturdiness"])
    printed = json.loads(capsys.readouterr().out)
    expected = {"classifier_accuracy", "generator", "clip_zero_shot"}
    assert printed.keys() == figures.keys() == expected
    assert set(printed["classifier_accuracy"]) == {"shape", "color", "size"}
    gen = printed["generator"]
    for key in ("confident_share", "tv", "combos_present", "combos_total", "joint_ratio_min",
                "joint_ratio_max"):
        assert key in gen
    assert gen["combos_total"] == 18 and set(gen["tv"]) == {"shape", "color", "size"}
    assert set(printed["clip_zero_shot"]) == {"data", "generated"}


@pytest.mark.slow
def test_shipped_models_meet_the_quality_bars():
    # 2,000 samples per figure (the card's own default is 5,000; CI's time budget): measured
    # 2026-12-07 with the shipped weights, every bar holds with room (classifier 1.0, TV at
    # most 0.017, joint ratio 0.72-1.20, CLIP on generated images 0.987, sturdiness 0.875);
    # the figures are seeded, so this is the same check every run.
    figures = card.measure(2000)
    assert min(figures["classifier_accuracy"].values()) >= 0.99
    gen = figures["generator"]
    assert gen["confident_share"] >= 0.9
    assert gen["combos_present"] == gen["combos_total"]
    assert max(gen["tv"].values()) <= 0.05
    assert gen["joint_ratio_min"] >= 0.5 and gen["joint_ratio_max"] <= 2.0
    assert min(figures["clip_zero_shot"]["data"].values()) >= 0.95
    assert min(figures["clip_zero_shot"]["generated"].values()) >= 0.9
    # CLIP-optimised samples stay what the prompt says (no dark images that fool it).
    assert min(figures["clip_sturdiness"].values()) >= 0.75
