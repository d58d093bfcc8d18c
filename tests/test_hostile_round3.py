"""Hostile input, round three (issue 27): each test failed before its fix.

Runs on the shapes world with tiny settings (a few seconds each); everything else is called
directly, without training.
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from energyql.cli import app
from energyql.errors import (
    ArtifactError,
    CheckpointError,
    OutputError,
    UsageError,
    WeightsMissingError,
)
from tests.controls.conftest import hf_cache, offline_cache, tiny_clip  # noqa: F401

runner = CliRunner()
# No start pool (the shapes world judges 8,192 base samples for it: most of a tiny run).
FAST = ["--steps", "2", "--batch", "8", "--samples", "16", "--warm-start", "0", "--no-progress",
        "--threads", "1"]
ROOT = Path(__file__).resolve().parents[1]


def _clean_failure(result, code: int, *names: str) -> str:
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    assert any(" ".join(n.split()) in text for n in names), result.output
    return text


@pytest.fixture(scope="module")
def red(tmp_path_factory):
    out = tmp_path_factory.mktemp("red") / "art"
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--out", str(out),
                                 *FAST])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def pose(tmp_path_factory):
    # 0.2..0.8: 0.8 rounds up in float32, so a float32 grid left the range (item 11).
    out = tmp_path_factory.mktemp("pose") / "art"
    result = runner.invoke(app, ["run", "pose(x in 0.2..0.8) & keep(identity)", "--gen",
                                 "shapes", "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    return out


def _edit(art: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


# --- 1. a manifest without stages --------------------------------------------------------------

def test_sample_of_a_manifest_without_stages_is_a_clean_error(red, tmp_path):
    copy = _edit(red, tmp_path, lambda m: m.update(stages=[]))
    result = runner.invoke(app, ["sample", str(copy), "-n", "2", "--out",
                                 str(tmp_path / "g.png")])
    _clean_failure(result, 1, "holds no stage")
    assert not (tmp_path / "g.png").exists()


# --- 2. a stride-0 tensor in an NVIDIA pickle --------------------------------------------------

def test_an_nvidia_pickle_with_a_stride0_bomb_is_refused_before_any_copy(tmp_path):
    from energyql.generators.nvidia_pkl import PersistentRecord, _check_tensor_sizes

    bomb = torch.zeros(1).as_strided((1 << 20, 1 << 20), (0, 0))  # claims 4 TiB
    fc = PersistentRecord("FullyConnectedLayer", {"_parameters": {"weight": bomb}})
    with pytest.raises(CheckpointError, match="larger than the data"):
        _check_tensor_sizes({"G_ema": PersistentRecord("Generator", {"_modules": {"fc": fc}})},
                            "net.pkl")


def test_convert_of_a_stride0_pickle_fails_cleanly_under_a_memory_limit(tmp_path):
    # The whole path, in a process whose address space is 4 GiB: the rescale of a 4 TiB
    # "weight" would die of MemoryError (or worse) instead of a CheckpointError.
    script = textwrap.dedent(f"""
        import resource, pickle, collections, sys, types
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        import torch
        from tests.generators.test_nvidia_pkl import Persistent, nvidia_layout, tiny_state_dict
        package = types.ModuleType("torch_utils")
        module = types.ModuleType("torch_utils.persistence")
        def _reconstruct_persistent_obj(meta): raise AssertionError
        _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
        module._reconstruct_persistent_obj = _reconstruct_persistent_obj
        package.persistence = module
        sys.modules["torch_utils"] = package; sys.modules["torch_utils.persistence"] = module
        make = lambda name, **f: Persistent(_reconstruct_persistent_obj, "{tmp_path}/m", name, **f)
        generator, mapping = nvidia_layout(tiny_state_dict(), make)
        bomb = torch.zeros(1).as_strided((1 << 20, 1 << 20), (0, 0))
        mapping.state["_modules"]["fc0"].state["_parameters"]["weight"] = bomb
        data = pickle.dumps({{"G_ema": generator}}, protocol=4)
        from energyql.generators.nvidia_pkl import convert
        from energyql.errors import CheckpointError
        try:
            convert(data)
        except CheckpointError as error:
            print("refused:", error.message)
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             env=env, timeout=300, cwd=ROOT)
    assert "refused:" in process.stdout and "larger than the data" in process.stdout, \
        process.stderr[-2000:]


# --- 3. sizes are bounded before any work; sweeps decode in chunks ------------------------------

@pytest.mark.parametrize("args, option", [
    (["--batch", "1000000000"], "--batch"),
    (["--steps", "100000000000"], "--steps"),
    (["--warm-start", "1000000000"], "--warm-start"),
    (["--threads", "100000"], "--threads"),
])
def test_run_refuses_huge_sizes_before_any_work(tmp_path, args, option):
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--out", str(out),
                                 "--no-progress", *args])
    _clean_failure(result, 2, option)
    assert not out.exists()


def test_train_refuses_a_huge_batch_in_python():
    import energyql as eq

    with pytest.raises(UsageError, match="at most"):
        eq.train("color == red", gen="shapes", batch=10**9, steps=1)


@pytest.mark.parametrize("sweep", ["x=0.3..0.7:1000000000", "x=0.3..0.7:1", "x=nan..0.7:3",
                                   "x=0.3..inf:3"])
def test_a_sweep_of_absurd_size_or_bounds_is_a_usage_error(pose, tmp_path, sweep):
    result = runner.invoke(app, ["sample", str(pose), "-n", "2", "--sweep", sweep, "--out",
                                 str(tmp_path / "s.png")])
    _clean_failure(result, 2, "--sweep")
    assert not (tmp_path / "s.png").exists()


def test_a_sweep_times_n_is_bounded_too(pose, tmp_path):
    result = runner.invoke(app, ["sample", str(pose), "-n", "1000000", "--sweep",
                                 "x=0.3..0.7:2", "--out", str(tmp_path / "s.png")])
    _clean_failure(result, 2, "more than 1,000,000")


def test_a_sweep_is_decoded_in_chunks(pose, tmp_path, monkeypatch):
    from energyql.cli.sample import SWEEP_CHUNK
    from energyql.sampler import Sampler

    sizes, real = [], Sampler.forward

    def spy(self, eps, *args, **kwargs):
        sizes.append(len(eps))
        return real(self, eps, *args, **kwargs)

    monkeypatch.setattr(Sampler, "forward", spy)
    n = SWEEP_CHUNK + 3
    result = runner.invoke(app, ["sample", str(pose), "-n", str(n), "--sweep", "x=0.2..0.8:2",
                                 "--out", str(tmp_path / "s.png"), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert max(sizes) <= SWEEP_CHUNK and sum(sizes) == 2 * n


# --- 4. generator options: one table, one exit code ----------------------------------------------

@pytest.mark.parametrize("gen, pair, words", [
    ("diffusers:/nowhere", "steps=nan", "finite"),
    ("diffusers:/nowhere", "steps=inf", "finite"),
    ("diffusers:/nowhere", "steps=", "must be a number"),
    ("diffusers:/nowhere", "steps=2.5", "whole number"),
    ("stylegan2:/nowhere.pt", "truncation=nan", "finite"),
    ("stylegan2:/nowhere.pt", "noise=sometimes", "one of"),
    ("biggan:/nowhere", "class_name=3.5", "class index"),
    ("biggan:/nowhere", "truncation=1.5", "at most 1"),
])
def test_bad_generator_option_values_are_usage_errors_for_every_family(gen, pair, words):
    from energyql.cli.run import gen_options

    with pytest.raises(UsageError, match=words):
        gen_options([pair], None, gen)


def test_loaders_refuse_bad_options_with_the_same_error_before_reading_weights():
    from energyql.generators.registry import resolve

    for gen, options in (("stylegan2:/nowhere.pt", {"truncation": float("nan")}),
                         ("stylegan2:/nowhere.pt", {"steps": 3}),
                         ("biggan:/nowhere", {"truncation": float("inf")}),
                         ("diffusers:/nowhere", {"steps": float("nan")})):
        with pytest.raises(UsageError):
            resolve(gen).load(**options)


def test_a_bad_stylegan2_option_exits_2_like_a_diffusion_one(tmp_path):
    for gen, pair in (("stylegan2:/nowhere.pt", "truncation=nan"),
                      ("diffusers:/nowhere", "steps=nan")):
        result = runner.invoke(app, ["run", "uniform(gender)", "--gen", gen, "--gen-option",
                                     pair, "--out", str(tmp_path / "o"), "--no-progress"])
        _clean_failure(result, 2, pair.split("=")[0])


def test_gen_option_twice_is_refused_and_mean_samples_is_accepted():
    from energyql.cli.run import gen_options

    with pytest.raises(UsageError, match="given twice"):
        gen_options(["steps=4", "steps=5"], None, "diffusers:/nowhere")
    with pytest.raises(UsageError, match="given twice"):
        gen_options(["truncation=0.5"], 0.7, "stylegan2:/nowhere.pt")
    assert gen_options(["mean_samples=64"], None, "stylegan2:/nowhere.pt") == {"mean_samples": 64}


def test_the_manifest_and_the_loaders_share_one_option_table():
    from energyql.generators.options import RECORDED
    from energyql.manifest import GENERATOR_OPTIONS

    assert GENERATOR_OPTIONS == RECORDED and "mean_samples" in RECORDED


def test_a_manifest_with_a_non_finite_or_unknown_option_value_is_refused(red, tmp_path):
    from energyql.manifest import Manifest

    copy = _edit(red, tmp_path, lambda m: m["generator"].update(options={"steps": -3}))
    with pytest.raises(ArtifactError, match="options"):
        Manifest.read(copy)


# --- 5. an empty CLIP checkpoint ----------------------------------------------------------------

def test_an_empty_hub_clip_checkpoint_is_a_clean_error(offline_cache, hf_cache,  # noqa: F811
                                                       tiny_clip, monkeypatch):  # noqa: F811
    from safetensors.torch import save

    from energyql.controls.clip import load_clip
    from tests.controls.helpers import put_in_hf_cache

    name, _, _ = tiny_clip
    cfg = {"hf_hub": "someone/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    # A tag of its own: loaded models are cached by spec, and other tests load 'hubtag'.
    monkeypatch.setattr("open_clip.get_pretrained_cfg",
                        lambda n, t: cfg if (n, t) == (name, "emptytag") else {})
    put_in_hf_cache(hf_cache, "someone/tiny-clip", "open_clip_model.safetensors", save({}))
    with pytest.raises(CheckpointError, match="holds no tensors"):
        load_clip(f"{name}:emptytag")


# --- 6. a cache path that is a file ------------------------------------------------------------

def test_a_cache_that_is_a_file_says_so_online_and_offline(tmp_path, monkeypatch):
    from energyql import hub

    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    monkeypatch.setenv("ENERGYQL_CACHE", str(cache))
    for offline in ("", "1"):
        monkeypatch.setenv("ENERGYQL_OFFLINE", offline)
        with pytest.raises(WeightsMissingError) as caught:
            hub.path("stylegan2-ffhq", progress=False)
        assert "is a file, not a folder" in caught.value.message
        assert "mkdir -p" not in (caught.value.hint or "")
    with pytest.raises(WeightsMissingError, match="is a file"):
        hub.download_file("http://127.0.0.1:9/x", cache / "sub" / "w.pt", progress=False)


def test_an_unreadable_cache_folder_says_so(tmp_path, monkeypatch):
    from energyql import hub

    assert hub.cache_problem(tmp_path / "missing") is None
    assert "is a file" in hub.cache_problem(Path(__file__) / "sub")


# --- 7. output files -----------------------------------------------------------------------------

def test_sample_into_an_impossible_place_is_a_clean_error(red, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for target, code in ((blocker / "grid.png", 1), (Path("/proc/x.png"), 2)):
        result = runner.invoke(app, ["sample", str(red), "-n", "2", "--out", str(target),
                                     "--no-progress"])
        _clean_failure(result, code, str(target))


def test_atomic_writes_refuse_non_regular_targets_and_report_os_errors(tmp_path):
    from energyql.io import write_bytes

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OutputError, match="not a regular file"):
        write_bytes(fifo, b"x")
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)
    write_bytes(tmp_path / "f", b"1")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        write_bytes(tmp_path / "f" / "x.png", b"x")
    with pytest.raises(OutputError, match="/proc/energyql-x.png"):
        write_bytes("/proc/energyql-x.png", b"x")


def test_sample_refuses_a_device_node_as_out(red, tmp_path):
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a copy of /dev/null
    except PermissionError:
        pytest.skip("cannot make device nodes here")
    result = runner.invoke(app, ["sample", str(red), "-n", "2", "--out", str(node)])
    _clean_failure(result, 2, "not a regular file")
    assert stat.S_ISCHR(os.stat(node).st_mode)


@pytest.mark.parametrize("name", ["[/bold]grid.png", "[bold]grid.png", "[red]x[/red].png"])
def test_paths_with_rich_markup_are_printed_as_written(red, tmp_path, name):
    target = tmp_path / name
    result = runner.invoke(app, ["sample", str(red), "-n", "2", "--out", str(target),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert target.is_file() and str(target) in result.output


# --- 8. --gen that disagrees with --from -------------------------------------------------------

def test_an_explicit_gen_that_disagrees_with_from_is_refused(red, tmp_path):
    result = runner.invoke(app, ["run", "then big", "--gen", "portraits", "--from", str(red),
                                 "--out", str(tmp_path / "o"), *FAST])
    _clean_failure(result, 2, "trained on 'shapes', not 'portraits'")
    assert not (tmp_path / "o").exists()
    import energyql as eq

    with pytest.raises(UsageError, match="not 'portraits'"):
        eq.train("then big", gen="portraits", start=red, steps=1)


# --- 9. --from composes graphs; a manifest's texts must agree ------------------------------------

def test_from_a_manifest_whose_canonical_hides_a_comment_is_refused(red, tmp_path):
    from energyql.manifest import Manifest

    def comment(m):
        m["source"] = m["canonical"] = m["stages"][0]["source"] = "color == red #"

    copy = _edit(red, tmp_path, comment)
    with pytest.raises(ArtifactError, match="canonical"):
        Manifest.read(copy)
    result = runner.invoke(app, ["run", "then uniform(shape)", "--from", str(copy), "--out",
                                 str(tmp_path / "o"), *FAST])
    _clean_failure(result, 1, "canonical")


def test_a_source_that_does_not_compile_to_the_canonical_is_refused(red, tmp_path):
    from energyql.manifest import Manifest

    copy = _edit(red, tmp_path, lambda m: m.update(source="color == blue"))
    with pytest.raises(ArtifactError, match="source"):
        Manifest.read(copy)


@pytest.mark.slow  # two runs on the shapes world with reports (about 9 s)
def test_a_source_ending_in_a_comment_still_gets_its_new_stage(red, tmp_path):
    copy = _edit(red, tmp_path, lambda m: m.update(source="color == red # mine"))
    out = tmp_path / "more"
    result = runner.invoke(app, ["run", "then uniform(shape)", "--from", str(copy), "--out",
                                 str(out), *FAST])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["canonical"] == "color == red | then uniform(shape)"
    assert [s["source"] for s in manifest["stages"]] == ["color == red", "uniform(shape)"]
    from energyql.lang.api import compile as compile_program

    assert str(compile_program(manifest["source"], gen="shapes")) == manifest["canonical"]


def test_extend_composes_graphs_not_text():
    from energyql.lang.api import compile as compile_program
    from energyql.lang.compose import extend

    whole = extend("color == red # a comment", compile_program("uniform(shape)"))
    assert len(whole.stages) == 2
    assert str(whole.checked("shapes")) == "color == red | then uniform(shape)"


# --- 10. options are validated before the first step --------------------------------------------

def test_run_with_one_sample_is_refused_before_training(tmp_path):
    out = tmp_path / "o"
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--out", str(out),
                                 "--steps", "2", "--batch", "8", "--samples", "1",
                                 "--no-progress", "--threads", "1"])
    _clean_failure(result, 2, "--samples")
    assert not out.exists()
    import energyql as eq

    with pytest.raises(UsageError, match="samples=1"):
        eq.train("color == red", gen="shapes", out=tmp_path / "p", report=True, samples=1)
    assert not (tmp_path / "p").exists()


# --- 11. conditional grids stay inside their range; evaluation never discards training -----------

@pytest.mark.parametrize("low, high", [(0.2, 0.8), (0.3, 0.7), (0.1, 0.6), (-0.7, 0.9),
                                       (0.7, 0.8), (1e-7, 0.3), (-25.3, 25.7), (0.0, 1.0)])
@pytest.mark.parametrize("steps", [2, 5, 7, 8, 13])
def test_context_grids_never_leave_their_range(low, high, steps):
    from energyql.sampler import check_context, context_grid

    class Param:
        name, control = "x", "pose"

    param = Param()
    param.low, param.high = low, high
    values = context_grid(low, high, steps)
    assert values[0] == low and values[-1] == high and len(values) == steps
    for v in values:
        check_context([param], {"x": v})  # raised "outside the trained range" for float32 grids


def test_the_conditional_run_of_the_issue_evaluates(pose):
    metrics = json.loads((pose / "metrics.json").read_text())
    assert "pose_error" in metrics and "evaluation_error" not in metrics


def test_an_evaluation_failure_keeps_the_artifact_and_writes_the_report(tmp_path, monkeypatch):
    import energyql.evaluation

    def broken(*args, **kwargs):
        raise UsageError("the judge fell over")

    monkeypatch.setattr(energyql.evaluation, "evaluate", broken)
    out = tmp_path / "o"
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--out", str(out),
                                 *FAST])
    _clean_failure(result, 1, "training finished and the artifact is saved")
    from energyql.sampler import load

    assert load(out).sample(2, seed=0).shape[0] == 2
    assert "evaluation failed: the judge fell over" in (out / "report.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["evaluation_error"]


# --- 12. reports escape what users wrote -------------------------------------------------------

HOSTILE_PROMPTS = ['a `b` c', "x ``` y", '<svg onload=alert(1)>', '[click](javascript:alert(1))',
                   "`", "a | b", "</code><script>alert(1)</script>"]


@pytest.mark.parametrize("prompt", HOSTILE_PROMPTS)
def test_report_md_and_html_show_prompts_verbatim_and_inert(tmp_path, prompt):
    import html as html_lib
    import re

    from energyql.manifest import FlowRecord, GeneratorRecord, Manifest, StageRecord
    from energyql.report import write_report

    source = f'clip("{prompt}")'
    manifest = Manifest(source=source, canonical=source, generator=GeneratorRecord("g"),
                        stages=(StageRecord(1, source, FlowRecord(2)),))
    write_report(tmp_path, manifest, {"samples": 4})
    md = (tmp_path / "report.md").read_text()
    line = next(x for x in md.splitlines() if x.startswith("Expression:"))
    spans = re.findall(r"(`+) ?(.*?) ?\1(?!`)", line[len("Expression: "):])
    assert spans and spans[0][1] == source, line  # one code span holding the whole source
    assert "<svg" not in md.replace(f"{spans[0][0]}", "").split("Expression:")[0]
    page = (tmp_path / "report.html").read_text()
    assert "<svg" not in page and "<script>" not in page and "javascript:alert" not in \
        page.replace(html_lib.escape(source), "")
    assert f"<code>{html_lib.escape(source)}</code>" in page


# --- 13. two processes taking over one stale lock ------------------------------------------------

def test_two_processes_racing_for_a_stale_lock_one_wins(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / ".energyql.lock").write_text(f"{dead.pid} {socket.gethostname()}\n")
    # Each racer reads the stale owner slowly, so that both have judged it stale before
    # either replaces it: the window the pid-file takeover left open.
    script = textwrap.dedent(f"""
        import sys, time
        import energyql.outdir as outdir
        real = outdir._owner
        def slow(lock):
            owner = real(lock)
            time.sleep(0.5)
            return owner
        outdir._owner = slow
        while time.time() < {__import__("time").time() + 2.0}:
            time.sleep(0.01)
        try:
            with outdir.claim(sys.argv[1]):
                print("won", flush=True)
                time.sleep(1.5)
        except Exception as error:
            print("lost", type(error).__name__, flush=True)
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    racers = [subprocess.Popen([sys.executable, "-c", script, str(folder)],
                               stdout=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    outputs = [r.communicate(timeout=60)[0] for r in racers]
    assert sum(o.startswith("won") for o in outputs) == 1, outputs
    assert all(o.startswith(("won", "lost ArtifactError")) for o in outputs), outputs


def test_a_run_saves_its_artifact_once_with_its_metrics(tmp_path, monkeypatch):
    from energyql.sampler import Artifact

    saved = []
    original = Artifact.save

    def counting(self, directory):
        saved.append(dict(self.manifest.metrics or {}))
        return original(self, directory)

    monkeypatch.setattr(Artifact, "save", counting)
    out = tmp_path / "o"
    result = runner.invoke(app, ["run", "color == red", "--gen", "shapes", "--out", str(out),
                                 *FAST])
    assert result.exit_code == 0, result.output
    assert len(saved) == 1 and "attributes" in saved[0]  # once, after the evaluation
    assert not list(out.glob("stage*.ckpt*"))  # and the checkpoints are gone


def test_an_interrupted_evaluation_keeps_the_artifact_and_the_checkpoints(tmp_path, monkeypatch):
    import energyql as eq
    import energyql.evaluation
    from energyql.checkpoints import any_checkpoint
    from energyql.sampler import load

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(energyql.evaluation, "evaluate", interrupted)
    out = tmp_path / "o"
    with pytest.raises(KeyboardInterrupt):
        eq.train("color == red", gen="shapes", out=out, report=True, progress=False,
                 steps=2, batch=16, samples=16, moment_samples=256, warm_start_samples=0)
    assert load(out).sample(2, seed=0).shape[0] == 2
    assert any_checkpoint(out)  # the run did not finish: --resume rebuilds it
