"""Option values are checked by the CLI before any work: exit 2, one message naming the option."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import energyql
from energyql.cli import app
from energyql.cli.app import (
    MAX_SAMPLES,
    MAX_SEED,
    BatchOption,
    CountOption,
    DeviceOption,
    FileOutOption,
    ForwardWeightOption,
    LearningRateOption,
    SamplesOption,
    SeedOption,
    StepsOption,
    ThreadsOption,
    WarmStartOption,
    guarded,
)
from energyql.errors import EnergyQLError

runner = CliRunner()


@pytest.fixture
def no_training(monkeypatch):
    """Make any training attempt fail the test: bad options must stop before it."""
    import energyql.workflow

    def refuse(*args, **kwargs):
        raise AssertionError("training started although an option was invalid")

    monkeypatch.setattr(energyql.workflow, "run_and_report", refuse)


def assert_usage_error(result, option: str) -> None:
    assert result.exit_code == 2, result.output
    assert f"'{option}'" in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


RUN_BAD = [
    ("--steps", "0"), ("--steps", "-5"), ("--batch", "0"), ("--batch", "-1"),
    ("--samples", "0"), ("--samples", str(MAX_SAMPLES + 1)), ("--seed", "-1"),
    ("--seed", "9" * 70), ("--seed", str(MAX_SEED + 1)), ("--lr", "nan"), ("--lr", "-1"),
    ("--lr", "0"), ("--lr", "inf"), ("--warm-start", "-5"), ("--forward-weight", "-0.5"),
    ("--forward-weight", "nan"), ("--temper", "0"), ("--temper", "inf"),
    ("--score-share", "1.5"), ("--defensive", "-0.1"), ("--chain-weight", "nan"),
    ("--threads", "0"), ("--threads", "-1"),
    ("--device", "gpu"), ("--device", "cpu:1"), ("--device", "cuda:x"), ("--device", ""),
    ("--out", ""), ("--out", "  "),
]


@pytest.mark.parametrize("option, value", RUN_BAD)
def test_run_refuses_bad_values_before_any_work(option, value, no_training):
    result = runner.invoke(app, ["run", "color == red", option, value])
    assert_usage_error(result, option)


def test_run_names_the_bad_value_and_the_rule():
    result = runner.invoke(app, ["run", "color == red", "--steps", "-5"])
    assert "must be at least 1, got -5" in result.output
    result = runner.invoke(app, ["run", "color == red", "--lr", "nan"])
    assert "finite" in result.output


def test_absent_cuda_device_is_a_usage_error(no_training):
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    result = runner.invoke(app, ["run", "color == red", "--device", f"cuda:{count}"])
    assert_usage_error(result, "--device")
    assert "not available" in result.output


def test_run_refuses_an_existing_file_as_out_before_training(tmp_path, no_training):
    target = tmp_path / "taken.txt"
    target.write_text("keep me")
    result = runner.invoke(app, ["run", "color == red", "--out", str(target)])
    assert_usage_error(result, "--out")
    assert "existing file" in result.output
    assert target.read_text() == "keep me"


def test_boundary_values_pass_the_checks():
    # Checked in isolation: each callback returns the value it accepts.
    probe = typer.Typer()
    seen: dict = {}

    @probe.command()
    def values(steps: StepsOption = None, batch: BatchOption = None, samples: SamplesOption = 1,
               n: CountOption = 1, seed: SeedOption = 0, lr: LearningRateOption = None,
               warm_start: WarmStartOption = None, forward_weight: ForwardWeightOption = None,
               threads: ThreadsOption = None, device: DeviceOption = "cpu") -> None:
        seen.update(locals())

    result = runner.invoke(probe, [
        "--steps", "1", "--batch", "1", "--samples", str(MAX_SAMPLES), "-n", str(MAX_SAMPLES),
        "--seed", str(MAX_SEED), "--lr", "1e-9", "--warm-start", "0", "--forward-weight", "0",
        "--threads", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen["seed"] == MAX_SEED and seen["n"] == MAX_SAMPLES and seen["warm_start"] == 0


@pytest.mark.parametrize("args, option", [
    (["-n", "0"], "-n"), (["-n", "-1"], "-n"), (["-n", str(MAX_SAMPLES + 1)], "-n"),
    (["--out", ""], "--out"),
])
def test_shared_types_for_sample_and_eval(args, option):
    probe = typer.Typer()

    @probe.command()
    def sample(n: CountOption = 64, out: FileOutOption = Path("grid.png")) -> None:
        raise AssertionError("the command ran with a bad option")

    assert_usage_error(runner.invoke(probe, args), option)


def test_file_out_refuses_a_folder(tmp_path):
    probe = typer.Typer()

    @probe.command()
    def write(out: FileOutOption = None) -> None:
        raise AssertionError("the command ran with a bad option")

    result = runner.invoke(probe, ["--out", str(tmp_path)])
    assert_usage_error(result, "--out")
    # rich folds a long temporary path over lines: compare the words, not the layout
    assert "is a folder" in " ".join(result.output.replace("│", " ").split())


def test_eval_without_an_argument_is_a_usage_error():
    result = runner.invoke(app, ["eval"])
    assert result.exit_code == 2, result.output
    assert "ARTIFACT" in result.output and "Traceback" not in result.output


def _guarded_app(error: BaseException) -> typer.Typer:
    probe = typer.Typer()

    @probe.command()
    @guarded
    def boom() -> None:
        raise error

    @probe.command()
    def other() -> None:
        pass

    return probe


@pytest.mark.parametrize("error", [EnergyQLError(""), EnergyQLError("   ")])
def test_error_handler_survives_an_empty_message(error):
    result = runner.invoke(_guarded_app(error), ["boom"])
    assert result.exit_code == 1
    assert result.output.strip() == "error: EnergyQLError (no message)"


def test_ctrl_c_prints_interrupted_and_exits_130():
    result = runner.invoke(_guarded_app(KeyboardInterrupt()), ["boom"])
    assert result.exit_code == 130
    assert result.output.strip() == "interrupted"


def test_version_prints_the_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"energyql {energyql.__version__}"


@pytest.mark.parametrize("pair, message", [
    ("steps", "is not KEY=VALUE"),
    ("path=/etc/passwd", "unknown generator option 'path'"),
    ("bogus=1", "unknown generator option 'bogus'"),
])
def test_gen_options_are_checked_before_training(no_training, tmp_path, pair, message):
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--gen-option", pair,
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_gen_options_reach_the_generator_loader(tmp_path):
    # shapes takes no options: the loader itself says so, as a usage error
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--gen-option",
                                 "noise=fixed", "--steps", "1", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "noise" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("cores, load, local, expected", [
    (2, 0.1, "1", 2),    # an idle machine: every core
    (2, 1.2, "1", 1),    # another process holds a core: one thread, not a 10-40x slowdown
    (2, 5.0, "1", 1),    # overloaded: still at least one
    (16, 3.6, "1", 12),
    (16, 0.0, "4", 4),   # torchrun's local processes share the idle cores
    (16, 0.0, "x", 16),  # a bad LOCAL_WORLD_SIZE counts as one process
])
def test_default_threads_are_the_cores_other_processes_leave_idle(cores, load, local,
                                                                   expected, monkeypatch):
    import os

    from energyql.cli.app import idle_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(cores)), raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert idle_threads() == expected


def test_run_without_threads_trains_on_the_idle_cores(monkeypatch, tmp_path):
    import energyql.api
    import energyql.cli.run as run_module

    seen = {}

    def fake_train(program, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(energyql.api, "train", fake_train)
    monkeypatch.setattr(run_module, "idle_threads", lambda: 7)
    runner.invoke(app, ["run", "color == red", "--out", str(tmp_path / "r")])
    assert seen.get("threads") == 7
    runner.invoke(app, ["run", "color == red", "--out", str(tmp_path / "s"), "--threads", "1"])
    assert seen["threads"] == 1
