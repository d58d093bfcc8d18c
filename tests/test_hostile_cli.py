"""Hostile files and folders through the CLI: exit code, one line naming the file, no traceback,
nothing written elsewhere; strict JSON from every --json."""

import json
import os
import random
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from energyql.cli import app
from tests.toys import register_tiny

runner = CliRunner()
# No start pool (the shapes world judges 8,192 base samples for it: most of a tiny run).
FAST = ["--steps", "4", "--batch", "8", "--samples", "32", "--warm-start", "0", "--no-progress",
        "--threads", "1"]
EXPRESSION = "color == red & uniform(size)"


def _strict(text: str):
    def refuse(name):
        raise AssertionError(f"{name} in --json output")

    return json.loads(text, parse_constant=refuse)


def _clean_failure(result, code: int, *names: str) -> str:
    """Assert a clean failure: the exit code, an 'error:' line naming one of ``names``, no
    traceback; return that line."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("error:"))
    assert any(n in line for n in names), line
    return line


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    gen = register_tiny()
    out = tmp_path_factory.mktemp("run") / "art"
    result = runner.invoke(app, ["run", EXPRESSION, "--gen", gen, "--out", str(out), *FAST,
                                 "--keep-checkpoints"])
    assert result.exit_code == 0, result.output
    return gen, out


def _copy(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


@pytest.mark.parametrize("name", ["flows.safetensors", "manifest.json"])
def test_sample_of_a_damaged_artifact_is_one_clean_line_and_writes_nothing(trained, tmp_path,
                                                                         name):
    _, out = trained
    copy = _copy(out, tmp_path)
    original = (copy / name).read_bytes()
    rng = random.Random(7)
    for cut in (0, 9, len(original) // 2):
        (copy / name).write_bytes(original[:cut])
        target = tmp_path / "grid.png"
        result = runner.invoke(app, ["sample", str(copy), "-n", "2", "--out", str(target)])
        _clean_failure(result, 1, name)
        assert not target.exists()
    damaged = bytearray(original)
    for _ in range(4):
        damaged[rng.randrange(len(damaged))] ^= 0xFF
    (copy / name).write_bytes(bytes(damaged))
    result = runner.invoke(app, ["eval", str(copy), "--samples", "8", "--json"])
    if result.exit_code == 0:  # flips in a manifest's figures can leave it valid
        _strict(result.stdout)
    else:
        _clean_failure(result, 1, name)


def test_eval_json_is_strict_and_a_nan_lambda_is_refused(trained, tmp_path):
    _, out = trained
    result = runner.invoke(app, ["eval", str(out), "--samples", "16", "--json"])
    assert result.exit_code == 0, result.output
    assert _strict(result.stdout)["samples"] == 16
    copy = _copy(out, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    lam = manifest["stages"][0]["lambda"]
    lam[next(iter(lam))][0] = float("nan")
    (copy / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["eval", str(copy), "--samples", "16", "--json"])
    _clean_failure(result, 1, "manifest.json")
    assert result.stdout.strip() == "" or not result.stdout.lstrip().startswith("{")


@pytest.mark.parametrize("expression", ["color == red", "color == red & 1e308 * (shape == circle)",
                                        "uniform(shape x color) | then debias(size)"])
def test_check_json_is_strict(expression):
    result = runner.invoke(app, ["check", expression, "--gen", "shapes", "--json"])
    assert result.exit_code == 0, result.output
    _strict(result.stdout)


def test_resume_with_another_expression_is_refused(trained, tmp_path):
    gen, out = trained
    copy = _copy(out, tmp_path)
    result = runner.invoke(app, ["run", "color == blue", "--gen", gen, "--out", str(copy),
                                 "--resume", *FAST])
    _clean_failure(result, 1, "stage1.ckpt.safetensors")
    assert "another run" in result.output
    assert json.loads((copy / "manifest.json").read_text())["canonical"] == EXPRESSION


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    gen = register_tiny()
    result = runner.invoke(app, ["run", "color == red", "--gen", gen, "--out",
                                 str(tmp_path / "new"), "--resume", *FAST])
    _clean_failure(result, 1, "nothing to resume")


def test_run_refuses_a_folder_of_other_files_unless_forced(tmp_path):
    gen = register_tiny()
    (tmp_path / "notes.txt").write_text("mine")
    args = ["run", "color == red", "--gen", gen, "--out", str(tmp_path), *FAST]
    _clean_failure(runner.invoke(app, args), 1, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    result = runner.invoke(app, [*args, "--force"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "manifest.json").is_file() and (tmp_path / "notes.txt").read_text() == "mine"
    assert not any(p.name.endswith((".tmp", ".next", ".lock")) for p in tmp_path.iterdir())


def test_run_on_a_locked_folder_fails_before_training(tmp_path):
    from energyql.outdir import claim

    gen = register_tiny()
    with claim(tmp_path / "busy"):
        result = runner.invoke(app, ["run", "color == red", "--gen", gen, "--out",
                                     str(tmp_path / "busy"), *FAST])
    _clean_failure(result, 1, "in use by another energyql run")
    assert not (tmp_path / "busy" / "stage1.ckpt.safetensors").exists()


# --- in a separate process with a bounded address space -------------------------------------------

def _limited():
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))


def test_a_manifest_asking_for_huge_flows_fails_within_a_memory_limit(trained, tmp_path):
    _, out = trained
    copy = _copy(out, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["stages"][0]["flow"].update(blocks=1_000_000, width=10**9)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    process = subprocess.run(
        [sys.executable, "-c", "from tests.toys import register_tiny; register_tiny(); "
         "from energyql.cli.app import main; main()", "sample", str(copy), "-n", "2",
         "--out", str(tmp_path / "x.png")],
        capture_output=True, text=True, env=env, preexec_fn=_limited, timeout=120)
    assert process.returncode == 1, process.stderr
    lines = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "manifest.json" in lines[0], process.stderr
    assert "Traceback" not in process.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


# --- option values, generated -----------------------------------------------------------------

VALUES = (st.integers(-(10**70), 10**70).map(str) | st.floats(allow_nan=True).map(repr)
          | st.sampled_from(["", " ", "nan", "inf", "-0", "1e999", "0x10", "cuda:99", "mps", "cpu"])
          | st.text(max_size=6))
OPTIONS = ["--steps", "--batch", "--lr", "--seed", "--threads", "--warm-start", "--samples",
           "--forward-weight", "--device", "--out"]


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(chosen=st.lists(st.tuples(st.sampled_from(OPTIONS), VALUES), min_size=1, max_size=3))
def test_any_option_values_end_in_a_usage_error_never_a_traceback(chosen):
    # The expression is broken too: whatever the options, nothing may train.
    args = ["run", "color ==", "--gen", "shapes", "--no-progress"]
    for option, value in chosen:
        args += [option, value]
    result = runner.invoke(app, args)
    assert isinstance(result.exception, SystemExit), (args, result.exception)
    assert result.exit_code == 2, (args, result.output)
    assert "Traceback" not in result.output
