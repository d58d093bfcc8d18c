"""Hostile input, round four (issue 27): the newest surfaces tried as an attacker would.

The training options (--temper, --chain-weight, --score-share, --defensive, --forward-weight
and their energyql.train keywords), hand-edited closeness and temper fields in manifests,
--gen-option, --from, --set/--sweep, output paths, rich markup in user text and the explorer's
HTTP API (through Starlette's TestClient, no browser). Cases marked "fixed" failed before
their fix; the others were already refused and stay pinned here. Training is tiny (steps 2,
batch 8, samples 16, warm start 0, one thread).
"""

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import energyql
from energyql.cli import app
from energyql.errors import UsageError
from energyql.training import TrainConfig
from tests.test_hostile_round3 import _clean_failure  # one definition of a clean failure

runner = CliRunner()
TINY = ["--steps", "2", "--batch", "8", "--samples", "16", "--no-progress", "--threads", "1",
        "--warm-start", "0"]
PY_TINY = dict(steps=2, batch=8, samples=16, warm_start_samples=0, threads=1, progress=False)


@pytest.fixture(scope="module")
def red(tmp_path_factory):
    out = tmp_path_factory.mktemp("red4") / "art"
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--out", str(out),
                                 *TINY])
    assert result.exit_code == 0, result.output
    return out


def _edit(art: Path, tmp_path: Path, change, name: str = "copy") -> Path:
    copy = tmp_path / name
    shutil.copytree(art, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


# --- 1. the new training options on the command line ---------------------------------------

@pytest.mark.parametrize("option, value, words", [
    ("--temper", "nan", "finite number"),
    ("--temper", "0", "greater than 0"),
    ("--temper", "-1", "greater than 0"),
    ("--temper", "1e308", "at most 100"),
    ("--temper", "abc", "valid number"),
    ("--chain-weight", "-1", "at least 0"),
    ("--chain-weight", "nan", "finite number"),
    ("--chain-weight", "1e308", "at most 1,000"),     # fixed: trained on an infinite loss
    ("--forward-weight", "inf", "finite number"),
    ("--forward-weight", "1e308", "at most 1,000"),   # fixed: likewise
    ("--score-share", "1.5", "at most 1"),
    ("--score-share", "-0.1", "at least 0"),
    ("--defensive", "0.95", "at most 0.9"),
    ("--defensive", "nan", "finite number"),
    ("--replay-weight", "1e308", "at most 1,000"),
    ("--replay-weight", "-1", "at least 0"),
    ("--coupling", "cubic", "not one of spline, affine"),
])
def test_run_refuses_bad_estimator_options(tmp_path, option, value, words):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--out", str(out),
                                 *TINY, option, value])
    _clean_failure(result, 2, words)
    assert not out.exists()


# --- 2. the same settings through energyql.train ----------------------------------------------

@pytest.mark.parametrize("settings, words", [
    ({"temper": "2"}, "must be a finite number"),
    ({"temper": True}, "must be a finite number"),
    ({"temper": 1e308}, "must be at most 100"),             # fixed
    ({"chain_weight": float("nan")}, "must be a finite number"),
    ({"chain_weight": 1e6}, "must be at most 1000"),         # fixed
    ({"forward_weight": 1e308}, "must be at most 1000"),     # fixed
    ({"smooth_score_share": 2.0}, "from 0 to 1"),
    ({"closeness_samples": -1}, "at least 0"),
    ({"closeness_samples": 1.5}, "whole number"),
    ({"closeness_samples": 10**9}, "at most"),
    ({"blocks": 0}, "at least 1"),
    ({"blocks": "4"}, "whole number"),
    ({"width": 10**9}, "at most"),
    ({"replay_weight": float("inf")}, "must be a finite number"),
    ({"replay_weight": 1e6}, "must be at most 1000"),
    ({"replay_capacity": 10**12}, "at most"),
    ({"replay_rows": -1}, "at least 0"),
    ({"coupling": "cubic"}, "must be one of spline, affine"),
    ({"coupling": ["spline"]}, "must be one of spline, affine"),
])
def test_train_refuses_bad_settings_before_training(tmp_path, settings, words):
    with pytest.raises(UsageError, match=words):
        energyql.train("color == red", gen="shapes", out=tmp_path / "o",
                       **{**PY_TINY, **settings})
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("config, words", [
    (TrainConfig(temper=-1.0), "temper=-1.0 must be greater than 0"),           # fixed
    (TrainConfig(chain_weight=float("nan")), "chain_weight=nan"),              # fixed
    (TrainConfig(defensive=5.0), "defensive=5.0 must be a number from 0"),     # fixed
    (TrainConfig(batch=0), "batch=0 must be at least 1"),                      # fixed
    ({"steps": 2}, "config must be an energyql.TrainConfig, not dict"),        # fixed
])
def test_train_checks_a_config_built_by_hand(tmp_path, config, words):
    with pytest.raises(UsageError, match=words):
        energyql.train("color == red", gen="shapes", config=config, progress=False,
                       samples=16)


def test_a_valid_config_and_settings_on_top_still_train(tmp_path):
    config = TrainConfig(steps=2, batch=8, warm_start_samples=0, temper=2.0)
    art = energyql.train("color == red", gen="shapes", config=config, threads=1,
                         progress=False, samples=16)
    assert art.manifest.stages[-1].train.settings["temper"] == 2.0


# --- 3. hand-edited closeness and temper fields ----------------------------------------------

def _stage(key, value):
    return lambda m: m["stages"][-1].__setitem__(key, value)


def _train(key, value):
    return lambda m: m["stages"][-1]["train"].__setitem__(key, value)


@pytest.mark.parametrize("change, words", [
    (_stage("closeness", "high"), "must be a JSON object, not a string"),
    (_stage("closeness", [1, 2]), "must be a JSON object, not a list"),
    (_stage("closeness", {"ess_fraction": float("nan")}), "NaN is not JSON"),
    (_stage("closeness", {"a": json.loads("[" * 30 + "]" * 30)}), "nested too deeply"),
    (_train("temper", float("nan")), "NaN is not JSON"),
    (_train("temper", [1]), "must be a plain value"),
    (_train("temper", "hot"), "'hot', not a number greater than 0"),    # fixed
    (_train("temper", -3), "-3, not a number greater than 0"),           # fixed
    (_train("temper", True), "True, not a number greater than 0"),       # fixed
    (_train("defensive", 7), "7, not a number from 0 to 1"),             # fixed
    (_train("chain_weight", -1), "-1, not a number of at least 0"),      # fixed
    (_train("replay_weight", "lots"), "'lots', not a number of at least 0"),
])
def test_eval_json_refuses_hostile_closeness_and_temper_fields(red, tmp_path, change, words):
    copy = _edit(red, tmp_path, change)
    result = runner.invoke(app, ["eval", str(copy), "--json", "--samples", "16",
                                 "--no-progress", "--threads", "1"])
    _clean_failure(result, 1, words)


@pytest.mark.parametrize("change", [
    _stage("closeness", {"ess_fraction": 1e308, "kl": -1e308, "samples": 10**30}),
    lambda m: m["metrics"].__setitem__("closeness", {"stage 1": 5}),
    _train("temper", 1e308),  # out of the CLI's range, but an artifact is never lost
])
def test_eval_json_measures_afresh_over_odd_recorded_figures(red, tmp_path, change):
    copy = _edit(red, tmp_path, change)
    result = runner.invoke(app, ["eval", str(copy), "--json", "--samples", "16",
                                 "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout)
    assert 0 <= figures["closeness"]["stage 1"]["ess_fraction"] <= 1


# --- 4. --set / --sweep / --gen-option / --from ------------------------------------------------

@pytest.mark.parametrize("args, words", [
    (["--set", "x=1"], "takes no context values"),
    (["--sweep", "x=0..1:3"], "--sweep needs an artifact with sliders or pose"),
    (["--sweep", "=0..1:3"], "--sweep needs an artifact with sliders or pose"),
])
def test_sample_refuses_context_on_an_unconditional_artifact(red, tmp_path, args, words):
    result = runner.invoke(app, ["sample", str(red), "-n", "2", *args, "--out",
                                 str(tmp_path / "g.png")])
    _clean_failure(result, 2, words)
    assert not (tmp_path / "g.png").exists()


@pytest.mark.parametrize("pair, words", [
    ("=1", "is not KEY=VALUE"),
    ("\x1b[31m=1", "\\x1b[31m"),  # the escape shown, not obeyed
    ("seed=" + "9" * 5000, "unknown generator option 'seed'"),
])
def test_bad_gen_options_are_usage_errors(tmp_path, pair, words):
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--out",
                                 str(tmp_path / "o"), *TINY, "--gen-option", pair])
    text = _clean_failure(result, 2, words)
    assert "\x1b" not in text


def test_from_a_file_is_refused(red, tmp_path):
    result = runner.invoke(app, ["run", "size == large", "--from", str(red / "manifest.json"),
                                 "--out", str(tmp_path / "o"), *TINY])
    _clean_failure(result, 1, "is not an energyql artifact")


def test_run_from_an_artifact_into_itself_is_refused_and_the_base_kept(red, tmp_path):
    # fixed: the extended artifact replaced the one it extends (its base was lost)
    copy = tmp_path / "base"
    shutil.copytree(red, copy)
    before = (copy / "manifest.json").read_bytes()
    for out in (copy, tmp_path / "." / "base"):
        result = runner.invoke(app, ["run", "size == large", "--from", str(copy), "--out",
                                     str(out), *TINY])
        _clean_failure(result, 2, "is the --from artifact")
    assert (copy / "manifest.json").read_bytes() == before


def test_train_from_an_artifact_into_itself_is_refused(red, tmp_path):  # fixed
    copy = tmp_path / "base"
    shutil.copytree(red, copy)
    with pytest.raises(UsageError, match="is the start= artifact"):
        energyql.train("size == large", start=str(copy), out=copy, **PY_TINY)
    assert len(json.loads((copy / "manifest.json").read_text())["stages"]) == 1


# --- 5. output paths --------------------------------------------------------------------------

def test_sample_into_a_name_too_long_for_the_system_is_a_usage_error(red, tmp_path):  # fixed
    out = tmp_path / ("a" * 300 + ".png")
    result = runner.invoke(app, ["sample", str(red), "-n", "2", "--out", str(out)])
    _clean_failure(result, 2, "File name too long")


def test_run_into_a_folder_name_too_long_is_a_usage_error(tmp_path):  # fixed
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--out",
                                 str(tmp_path / ("b" * 300)), *TINY])
    _clean_failure(result, 2, "File name too long")


def test_an_output_path_with_markup_is_printed_as_written(red, tmp_path):
    out = tmp_path / "[/x].png"
    result = runner.invoke(app, ["sample", str(red), "-n", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "[/x].png" in result.output and out.is_file()


# --- 6. rich markup in user text ---------------------------------------------------------------

def test_check_prints_prompts_with_markup_verbatim():
    result = runner.invoke(app, ["check", 'clip("[/x]") & clip("[bold]y[/bold]")', "--gen",
                                 "shapes"])
    assert result.exit_code == 0, result.output
    assert 'clip "[/x]"' in result.output and 'clip "[bold]y[/bold]"' in result.output


@pytest.mark.parametrize("name", ["[/x]cache", "[bold]cache[/bold]"])
def test_gens_prints_a_cache_path_with_markup_verbatim(tmp_path, monkeypatch, name):  # fixed
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path / name))
    result = runner.invoke(app, ["gens"])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert f"weights cache: {tmp_path / name}" in " ".join(result.output.split())


# --- 7. the explorer's HTTP API ----------------------------------------------------------------

@pytest.fixture(scope="module")
def client(red, tmp_path_factory):
    pytest.importorskip("starlette")
    from starlette.testclient import TestClient

    from energyql.app import create_app

    root = tmp_path_factory.mktemp("runs4")
    shutil.copytree(red, root / "red")
    shutil.copytree(red, root / "bad")
    (root / "bad" / "metrics.json").write_text('{"samples": ' + "9" * 5000 + "}")
    return TestClient(create_app(str(root)), raise_server_exceptions=False,
                      base_url="http://127.0.0.1:8000")


def _post(client, path, body):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={"content-type": "application/json"})


@pytest.mark.parametrize("path, body, status, words", [
    ("/api/run/draw", b"{not json", 400, "the request is not JSON"),
    ("/api/run/draw", b"\xff\xfe", 400, "the request is not JSON"),
    ("/api/run/draw", b"[1, 2]", 400, "must be a JSON object"),
    ("/api/run/draw", b'{"name": "red", "seed": 1e999}', 400, "whole number, got inf"),
    ("/api/run/draw", b'{"name": "red", "seed": NaN}', 400, "whole number, got nan"),
    ("/api/run/draw", {"name": "red", "seed": -1}, 400, "from 0"),
    ("/api/run/draw", {"name": "red", "seed": 2**64}, 400, "from 0"),
    ("/api/run/draw", {"name": "red", "seed": "\u00b2"}, 400, "whole number"),       # fixed
    ("/api/run/draw", {"name": "red", "seed": "\u0663"}, 400, "whole number"),       # fixed
    ("/api/run/draw", b'{"name": "red", "seed": ' + b"9" * 5000 + b"}", 400,
     "number too long"),                                                             # fixed
    ("/api/run/draw", {"name": "re\x1b[31md"}, 400, "\\x1b[31md' is not a run name"),
    ("/api/run/draw", {"name": "red\x00"}, 400, "\\x00' is not a run name"),
    ("/api/run/draw", {"name": "red", "sampler": ["flow"]}, 400, "sampler must be a name"),
    ("/api/run/compare", {"name": "red", "stage": 99}, 400, "stage must be from 1 to 1"),
    ("/api/run/compare", {"name": "red", "stage": "1e3"}, 400, "whole number"),
    ("/api/run/info", {"name": ["red"]}, 400, "the run name is missing"),
    ("/api/train", {"expr": "color == red", "gen": "shapes", "name": "\u202eevil"}, 400,
     "is not a new run name"),
    ("/api/train", {"expr": "color == red", "gen": "shapes", "name": "r\u00e9"}, 400,
     "is not a new run name"),
    ("/api/train", {"expr": "color == red", "gen": "shapes", "name": "n1", "steps": "\u00b2"},
     400, "steps must be a whole number"),                                           # fixed
    ("/api/train", {"expr": "color == red", "gen": "shapes", "name": "n1",
                    "blocks": 10**30}, 400, "blocks must be from 1 to"),
    ("/api/train", {"expr": "color == red", "gen": "shapes", "name": "n1", "seed": -5}, 400,
     "seed must be from 0"),
])
def test_the_api_answers_hostile_requests_with_a_clean_400(client, path, body, status, words):
    response = _post(client, path, body)
    assert response.status_code == status, response.text
    assert words in response.json()["error"], response.text


@pytest.mark.parametrize("query, words", [
    ("seed=%C2%B2", "whole number"),          # fixed: '²' passed isdigit(), int() refused it
    ("seed=%D9%A3", "whole number"),          # fixed: an Arabic-Indic 3 reached the header
    ("seed=-1", "from 0"),
    ("context=NaN", "context must map"),
    ("context=%7B%22x%22%3A1e999%7D", "finite number"),
    ("sampler=evil", "unknown sampler"),
])
def test_grid_png_refuses_hostile_queries(client, query, words):
    response = client.get(f"/api/run/grid.png?name=red&{query}")
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


def test_download_names_are_ascii():  # fixed: isalnum() kept any script's letters
    from energyql.app.server import _safe_filename

    assert _safe_filename("red-seed\u0663\u00e9.png") == "red-seed__.png"


def test_info_on_a_metrics_file_with_a_5000_digit_number_answers(client):  # fixed
    response = _post(client, "/api/run/info", {"name": "bad"})
    assert response.status_code == 200, response.text
    assert ["metrics.json cannot be read", "—", "—"] in response.json()["headline"]


def test_check_returns_markup_in_prompts_verbatim(client):
    response = _post(client, "/api/check", {"expr": 'clip("[bold]x[/bold]")', "gen": "shapes"})
    assert response.status_code == 200
    assert 'clip "[bold]x[/bold]"' in response.json()["tree"]


def test_report_of_an_unknown_kind_is_refused(client):
    response = client.get("/api/run/report?name=red&kind=pdf")
    assert response.status_code == 400 and "unknown report kind" in response.json()["error"]
