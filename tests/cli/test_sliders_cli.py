"""Sliders through the CLI and the Python face (issue 24), on the tiny test generator."""

import json

import pytest
import torch
from typer.testing import CliRunner

import energyql as eq
from energyql.cli import app
from tests.toys import register_tiny

runner = CliRunner()
EXPR = "dist(color, blue = p in 0.1..0.9) & (w in 0..2) * (size == large)"


@pytest.fixture(scope="module")
def slider_run(tmp_path_factory):
    gen = register_tiny()
    out = tmp_path_factory.mktemp("sliders") / "art"
    result = runner.invoke(app, ["run", EXPR, "--gen", gen, "--out", str(out), "--steps", "6",
                                 "--batch", "16", "--samples", "64", "--warm-start", "256",
                                 "--moment-samples", "512",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    return gen, out


def test_the_run_records_the_sliders_their_grid_and_a_sweep(slider_run):
    _, out = slider_run
    manifest = json.loads((out / "manifest.json").read_text())
    stage = manifest["stages"][-1]
    assert [c["name"] for c in stage["context"]] == ["p", "w"]
    grid = stage["lambda_grid"]
    assert grid["sliders"] == ["p", "w"] and grid["points"] == 9
    assert len(grid["lambda"]) == 81 and len(grid["lambda"][0]) == 3
    # Closeness is measured at every corner and middle of the two ranges; the headline is the
    # worst of them.
    settings = stage["closeness"]["settings"]
    assert len(settings) == 9
    assert stage["closeness"]["ess_fraction"] == min(s["ess_fraction"] for s in settings)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["setting"] == {"p": 0.5, "w": 1.0}
    sweep = metrics["sliders"]["p"]
    assert [round(r["value"], 6) for r in sweep] == [0.1, 0.3, 0.5, 0.7, 0.9]
    assert all(r["requested"] == {"color = blue": pytest.approx(r["value"])} for r in sweep)
    assert all(0 <= r["judged"]["color = blue"] <= 1 for r in sweep)
    # A weight slider's sweep follows the share of the predicate it weights (the weighted term
    # is measured by its predicate's text at every weight; at 0 the term is gone).
    weights = metrics["sliders"]["w"]
    assert [r["value"] for r in weights] == [0.0, 0.5, 1.0, 1.5, 2.0]
    assert "size == large" not in weights[0]["predicate_share"]
    assert all("size == large" in r["predicate_share"] for r in weights[1:])
    report = (out / "report.md").read_text()
    assert "## Sliders" in report and "slider_p.png" in report and "slider_w.png" in report
    assert "judged share size == large" in report  # the weight slider's table
    assert (out / "slider_p.png").is_file()


def test_eval_at_a_setting_measures_that_settings_target(slider_run):
    _, out = slider_run
    result = runner.invoke(app, ["eval", str(out), "--set", "p=0.3", "--set", "w=0",
                                 "--samples", "64", "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert figures["setting"] == {"p": 0.3, "w": 0.0}
    table = runner.invoke(app, ["eval", str(out), "--set", "p=0.3", "--samples", "32",
                                "--no-progress"])
    assert table.exit_code == 0 and "slider setting" in table.output
    assert "p=0.3, w=1" in table.output  # w not given: its middle
    # The target at p = 0.3: blue 0.3, the other colours share the rest; w = 0 drops the weight.
    assert list(figures["kl_to_target"]) == ["dist(color, red=0.35, green=0.35, blue=0.3)"]
    assert "closeness" in figures


@pytest.mark.parametrize("args, message", [
    (["--set", "p=0.95"], "outside the trained range 0.1..0.9"),
    (["--set", "q=0.5"], "unknown context parameter"),
    (["--set", "p=nan"], "outside the trained range"),
])
def test_settings_outside_the_sliders_exit_2_with_the_range(slider_run, tmp_path, args,
                                                            message):
    _, out = slider_run
    for command in (["sample", str(out), "-n", "4", "--out", str(tmp_path / "g.png")],
                    ["eval", str(out), "--samples", "16"]):
        result = runner.invoke(app, [*command, *args, "--no-progress"])
        assert result.exit_code == 2, result.output
        assert message in result.output
    assert not (tmp_path / "g.png").exists()


def test_sample_sweeps_a_slider_and_corrects_at_a_setting(slider_run, tmp_path):
    _, out = slider_run
    result = runner.invoke(app, ["sample", str(out), "-n", "3", "--sweep", "p=0.1..0.9:4",
                                 "--set", "w=1", "--out", str(tmp_path / "sweep.png"),
                                 "--tensors", str(tmp_path / "sweep.safetensors"),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    from safetensors.torch import load_file

    assert load_file(tmp_path / "sweep.safetensors")["images"].shape[0] == 12
    result = runner.invoke(app, ["sample", str(out), "-n", "8", "--set", "p=0.7",
                                 "--sampler", "flow+sir", "--option", "pool=64",
                                 "--out", str(tmp_path / "sir.png"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "sir.png").is_file()
    # A corrected sampler sweeps too: each setting sampled towards its own exact target.
    result = runner.invoke(app, ["sample", str(out), "-n", "2", "--sweep", "p=0.1..0.9:3",
                                 "--sampler", "flow+sir", "--option", "pool=32",
                                 "--out", str(tmp_path / "sir-sweep.png"),
                                 "--tensors", str(tmp_path / "sir-sweep.safetensors"),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert load_file(tmp_path / "sir-sweep.safetensors")["images"].shape[0] == 6
    for p in ("0.1", "0.5", "0.9"):
        assert f"sampler flow+sir at p={p}, w=1" in result.output


def test_python_sampler_takes_sliders_by_name(slider_run):
    gen, out = slider_run
    sampler = eq.Sampler.load(out)
    a = sampler.sample(4, seed=1, p=0.2, w=1.5)
    b = sampler.sample(4, seed=1, context={"p": 0.2, "w": 1.5})
    assert torch.equal(a, b)
    assert not torch.equal(a, sampler.sample(4, seed=1, p=0.8, w=1.5))
    z = sampler.sample_latents(4, seed=1, context={"p": 0.2, "w": 1.5})
    assert torch.isfinite(sampler.log_prob(z, p=0.2, w=1.5)).all()
    with pytest.raises(eq.UsageError, match="0.1..0.9"):
        sampler.sample(2, p=0.05)
    artifact = eq.load(out)
    view = artifact.at(p=0.2, w=1.5)
    assert view.setting == {"p": 0.2, "w": 1.5} and not view.sliders
    assert view.manifest.canonical == \
        "dist(color, red=0.4, green=0.4, blue=0.2) & 1.5 * size == large"
    assert torch.equal(view.sample(4, seed=1), artifact.sample(4, seed=1,
                                                               context={"p": 0.2, "w": 1.5}))
    with pytest.raises(eq.ArtifactError, match="view"):
        view.save(out.parent / "view")


@pytest.mark.parametrize("edit, problem", [
    (lambda g: g.update(points=10**9), "points"),
    (lambda g: g.update(points=3), "rows"),
    (lambda g: g.update(sliders=[]), "slider names"),
    (lambda g: g.update(sliders=["p", "not a name"]), "slider names"),
    (lambda g: g["lambda"][0].append(1.0), "one length"),
    (lambda g: g["lambda"][1].__setitem__(0, 1e300), "finite number"),
    (lambda g: g["lambda"][1].__setitem__(0, "x"), "finite number"),
    (lambda g: g.update(extra=1), "extra"),
])
def test_a_hand_edited_lambda_grid_is_refused_before_use(slider_run, tmp_path, edit, problem):
    import shutil

    _, out = slider_run
    copy = tmp_path / "art"
    shutil.copytree(out, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    edit(manifest["stages"][-1]["lambda_grid"])
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(eq.ArtifactError, match="lambda_grid") as info:
        eq.load(copy)
    assert problem in str(info.value)


@pytest.mark.parametrize("value", ["0", "-3", "2000000", "1.5", "many"])
def test_moment_samples_out_of_bounds_exit_2(tmp_path, value):
    result = runner.invoke(app, ["run", "dist(color, blue = p in 0.1..0.9)", "--gen", "shapes",
                                 "--moment-samples", value, "--out", str(tmp_path / "a")])
    assert result.exit_code == 2, result.output
    assert "--moment-samples" in result.output
    assert not (tmp_path / "a").exists()


def test_the_explorer_draws_a_slider_run_at_a_setting(slider_run):
    from energyql.app.explorer import Explorer
    from energyql.app.runs import RunsDir

    _, out = slider_run
    explorer = Explorer(RunsDir(out.parent))
    info = explorer.info(out.name)
    assert [c["name"] for c in info["context"]] == ["p", "w"]
    low = explorer.draw(out.name, seed=0, context={"p": 0.1, "w": 0})
    high = explorer.draw(out.name, seed=0, context={"p": 0.9, "w": 2})
    assert low.pose == {} and set(low.attributes) >= {"color"}
    assert low.to_dict() != high.to_dict()
    with pytest.raises(eq.UsageError, match="0.1..0.9"):
        explorer.draw(out.name, seed=0, context={"p": 1.5})


CHAINED = "dist(color, blue = p in 0.1..0.9) | then size == large & dist(shape, circle=0.5)"


@pytest.fixture(scope="module")
def chained_run(tmp_path_factory):
    gen = register_tiny()
    out = tmp_path_factory.mktemp("chained") / "art"
    result = runner.invoke(app, ["run", CHAINED, "--gen", gen, "--out", str(out), "--steps",
                                 "4", "--batch", "16", "--samples", "64", "--moment-samples",
                                 "512", "--no-progress"])
    assert result.exit_code == 0, result.output
    return gen, out


def test_a_stage_after_a_slider_stage_takes_the_slider(chained_run):
    gen, out = chained_run
    manifest = json.loads((out / "manifest.json").read_text())
    first, second = manifest["stages"]
    assert [c["name"] for c in first["context"]] == [c["name"] for c in second["context"]] \
        == ["p"]
    # The second stage's constraint has λ per setting of the earlier slider (its base moves).
    assert second["lambda_grid"]["sliders"] == ["p"]
    assert len(second["lambda_grid"]["lambda"]) == 17
    lam = torch.tensor(second["lambda_grid"]["lambda"])
    assert not torch.allclose(lam[0], lam[-1])
    # The sweep measures the earlier stage's dist slider on the final samples.
    metrics = json.loads((out / "metrics.json").read_text())
    assert all("color = blue" in r["judged"] for r in metrics["sliders"]["p"])
    sampler = eq.Sampler.load(out)
    assert [p.name for p in sampler.context_params] == ["p"]
    z = sampler.sample_latents(8, seed=0, context={"p": 0.2})
    low, high = sampler.log_prob(z, p=0.2), sampler.log_prob(z, p=0.9)
    assert torch.isfinite(low).all() and not torch.allclose(low, high)
    art = eq.load(out)
    a = art.sample(4, seed=1, context={"p": 0.2})
    b = art.sample(4, seed=1, context={"p": 0.9})
    assert not torch.allclose(a, b)  # both stages follow p
    # At a setting every stage is fixed: the view draws what the conditional chain draws there.
    view = art.at(p=0.2)
    assert [s.context_params for s in view.sampler.stages] == [[], []]
    assert torch.allclose(view.sample(4, seed=1), a, atol=1e-5)
    assert " in 0.1..0.9" not in view.manifest.canonical
    assert [s.lambda_grid for s in view.manifest.stages] == [None, None]
    result = runner.invoke(app, ["sample", str(out), "--set", "p=0.3", "-n", "4", "--out",
                                 str(out.parent / "s.png"), "--no-progress"])
    assert result.exit_code == 0, result.output


def test_a_manifest_whose_later_stage_drops_the_slider_is_refused(chained_run, tmp_path):
    import shutil

    _, out = chained_run
    copy = tmp_path / "art"
    shutil.copytree(out, copy)
    data = json.loads((copy / "manifest.json").read_text())
    data["stages"][1]["context"] = []
    data["stages"][1]["flow"]["context_dim"] = 0
    (copy / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(eq.errors.EnergyQLError):
        eq.load(copy)


def test_a_stage_added_with_from_takes_the_artifacts_sliders(slider_run, tmp_path):
    gen, out = slider_run
    more = tmp_path / "more"
    result = runner.invoke(app, ["run", "then shape == circle", "--from", str(out), "--out",
                                 str(more), "--steps", "2", "--batch", "16", "--samples", "64",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((more / "manifest.json").read_text())
    assert [c["name"] for c in manifest["stages"][1]["context"]] == ["p", "w"]
    assert "lambda_grid" not in manifest["stages"][1]  # no constraint in the new stage
    art = eq.load(more)
    assert art.at(p=0.2, w=0).sample(2, seed=0).shape[0] == 2


def test_a_pose_stage_after_a_slider_stage_keeps_its_pose_free_at_a_setting(tmp_path):
    gen = register_tiny()
    out = tmp_path / "pose"
    result = runner.invoke(app, ["run", "dist(color, blue = p in 0.1..0.9) | then "
                                 "pose(x in 0.2..0.8) & keep(identity)", "--gen", gen,
                                 "--out", str(out), "--steps", "2", "--batch", "16",
                                 "--samples", "32", "--moment-samples", "512",
                                 "--no-progress"])
    assert result.exit_code == 0, result.output  # the run's evaluation sets p, leaves x free
    manifest = json.loads((out / "manifest.json").read_text())
    assert [c["name"] for c in manifest["stages"][1]["context"]] == ["p", "x"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["setting"] == {"p": 0.5} and "x" in metrics["pose_error"]
    art = eq.load(out)
    view = art.at(p=0.2)
    assert [p.name for p in view.sampler.context_params] == ["x"]
    assert view.manifest.stages[1].flow.context_dim == 1
    # The view at p = 0.2 draws what the conditional chain draws at (p, x) = (0.2, 0.3).
    chain = art.sample(3, seed=2, context={"p": 0.2, "x": 0.3})
    assert torch.allclose(view.sample(3, seed=2, context={"x": 0.3}), chain, atol=1e-5)
