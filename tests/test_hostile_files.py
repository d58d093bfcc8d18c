"""Hostile and damaged files: every one is a clean EnergyQLError naming the file, with bounded work.

Generated cases (seeded byte flips and truncations of every artifact and checkpoint file,
hypothesis-built manifests) run under an address-space limit, so that a file that made the
loader allocate gigabytes fails the test instead of exhausting the machine.
"""

import errno
import json
import os
import random
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import energyql as eq
from energyql.errors import ArtifactError, CheckpointError, UnknownGeneratorError, UnsafePickleError
from energyql.io import read_safetensors, staged
from energyql.manifest import Manifest
from energyql.outdir import LOCK, claim
from energyql.training import TrainConfig, train_stage
from tests.toys import PointGenerator, QuadraticEnergy, register_tiny, stage

CONFIG = TrainConfig(steps=4, batch=8, blocks=2, width=16, moment_samples=256, refit_every=0,
                     checkpoint_every=2)
EXPRESSION = "color == red | then uniform(size)"
# Headroom over what the test process already maps: a bomb's allocation fails inside it.
HEADROOM = 1 << 30


@pytest.fixture
def bounded_memory():
    """Limit this process's address space to its current size plus 1 GiB for one test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as handle:
        mapped = int(handle.read().split()[0]) * resource.getpagesize()
    limit = mapped + HEADROOM if hard == resource.RLIM_INFINITY else min(hard, mapped + HEADROOM)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    register_tiny()
    out = tmp_path_factory.mktemp("art")
    art = eq.train(EXPRESSION, gen="toy-shapes", config=CONFIG, out=out, progress=False)
    return art, out


def _copy(out: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def _flip(data: bytes, rng: random.Random, flips: int) -> bytes:
    damaged = bytearray(data)
    for _ in range(flips):
        position = rng.randrange(len(damaged))
        damaged[position] ^= 1 << rng.randrange(8)
    return bytes(damaged)


def _damaged_versions(data: bytes, seed: int, count: int = 12):
    """Seeded byte flips (1 to 8 bits), truncations, and empty/random files of ``data``'s size."""
    rng = random.Random(seed)
    for i in range(count):
        yield f"flip{i}", _flip(data, rng, 1 + i % 8)
    for cut in sorted({0, 1, 7, 8, 9, len(data) // 3, len(data) // 2, len(data) - 1}):
        yield f"cut{cut}", data[:cut]
    yield "random", bytes(rng.randrange(256) for _ in range(len(data)))


def _names(error: BaseException, *names: str) -> None:
    first = str(error).splitlines()[0]
    assert any(n in first for n in names), first


# --- artifact files ----------------------------------------------------------------------------


def test_every_damaged_flows_file_is_refused_naming_it(artifact, tmp_path, bounded_memory):
    art, out = artifact
    copy = _copy(out, tmp_path)
    original = (out / "flows.safetensors").read_bytes()
    for label, data in _damaged_versions(original, seed=1):
        (copy / "flows.safetensors").write_bytes(data)
        with pytest.raises(ArtifactError) as info:
            eq.load(copy)
        _names(info.value, "flows.safetensors")
        assert "Traceback" not in str(info.value), label


def test_a_damaged_manifest_loads_as_before_or_is_refused_naming_it(artifact, tmp_path,
                                                                     bounded_memory):
    art, out = artifact
    copy = _copy(out, tmp_path)
    original = (out / "manifest.json").read_bytes()
    refused = 0
    for label, data in _damaged_versions(original, seed=2, count=40):
        (copy / "manifest.json").write_bytes(data)
        try:
            loaded = eq.load(copy)
        except ArtifactError as error:
            _names(error, "manifest.json", "flows.safetensors", str(copy))
            refused += 1
        else:  # a flip inside a figure or a name may leave a valid manifest: same sampler
            assert torch.equal(loaded.sample(2, seed=0), art.sample(2, seed=0)), label
    assert refused > 30


def test_a_header_claiming_huge_tensors_is_refused_before_allocating(tmp_path, bounded_memory):
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**6, 10**6],
                               "data_offsets": [0, 4 * 10**12]}}).encode()
    path = tmp_path / "bomb.safetensors"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match=r"bomb.safetensors: tensor 'w'"):
        read_safetensors(path, max_bytes=1 << 20)
    path.write_bytes(struct.pack("<Q", 10**15) + b"{}")
    with pytest.raises(CheckpointError, match="header claims"):
        read_safetensors(path, max_bytes=1 << 20)


@pytest.mark.parametrize("change, field", [
    (lambda t: t.pop(next(iter(t))), "is missing"),
    (lambda t: t.update(extra=torch.zeros(2)), "'extra' is not expected"),
    (lambda t: t.update({k: torch.zeros(3) for k in list(t)[:1]}), "has shape"),
    (lambda t: t.update({k: v.double() for k, v in list(t.items())[:1]}), "dtype F64"),
])
def test_flows_with_wrong_keys_shapes_or_dtypes_are_refused(artifact, tmp_path, change, field):
    from safetensors.torch import load_file, save_file

    _, out = artifact
    copy = _copy(out, tmp_path)
    tensors = load_file(str(out / "flows.safetensors"))
    change(tensors)
    save_file(tensors, str(copy / "flows.safetensors"))
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["flows_sha256"]  # as an older artifact would: the tensors themselves are checked
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=field):
        eq.load(copy)


@pytest.mark.parametrize("value", [float("nan"), 1e308 * 10, -1e308, 1e308, 2e6])
def test_a_non_finite_or_absurd_lambda_is_refused_on_load(artifact, tmp_path, value):
    _, out = artifact
    copy = _copy(out, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    lam = manifest["stages"][1]["lambda_exact"]
    lam[next(iter(lam))][0] = value
    (copy / "manifest.json").write_text(json.dumps(manifest))  # NaN / Infinity tokens, or 1e308
    with pytest.raises(ArtifactError, match="manifest.json"):
        eq.load(copy)


# --- hypothesis-built manifests ------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=4),
    max_leaves=12)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, (*prefix, i))


def test_a_manifest_with_any_field_replaced_is_read_or_refused_cleanly(artifact):
    _, out = artifact
    original = json.loads((out / "manifest.json").read_text())
    paths = list(_paths(original))[1:]
    outcomes = {"read": 0, "refused": 0}

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck),
              derandomize=True, database=None)
    @given(data=st.data())
    def replace_one_field(data):
        manifest = json.loads(json.dumps(original))
        where = data.draw(st.sampled_from(paths))
        value = data.draw(JSON)
        node = manifest
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
        try:
            Manifest.from_dict(manifest, "manifest.json")
        except ArtifactError as error:
            assert str(error).startswith("manifest.json: field '"), str(error)
            outcomes["refused"] += 1
        else:
            outcomes["read"] += 1

    replace_one_field()
    # A reader that accepted everything would refuse none: most random replacements (a list
    # for a number, a string for a dict, ...) must be refused, as the byte flips above are.
    assert outcomes["refused"] > 2 * outcomes["read"], outcomes


# --- atomic commit -------------------------------------------------------------------------------


def test_a_failure_between_the_flows_and_the_manifest_leaves_the_old_artifact(artifact, tmp_path,
                                                                              monkeypatch):
    import energyql.sampler

    art, out = artifact
    copy = _copy(out, tmp_path)
    before = eq.load(copy).sample(3, seed=5)
    retrained = eq.train("color == blue", gen="toy-shapes", config=CONFIG, progress=False)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as a kill after the flows were written

    monkeypatch.setattr(energyql.sampler, "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        retrained.save(copy)
    monkeypatch.undo()
    assert staged(copy / "flows.safetensors").is_file()  # the new flows, never committed
    again = eq.load(copy)
    assert again.manifest.canonical == EXPRESSION and torch.equal(again.sample(3, seed=5), before)
    art.save(copy)  # the next commit drops the orphan
    assert not staged(copy / "flows.safetensors").exists()


def test_a_failure_after_the_manifest_leaves_the_new_artifact(artifact, tmp_path, monkeypatch):
    import energyql.io

    _, out = artifact
    copy = _copy(out, tmp_path)
    retrained = eq.train("color == blue", gen="toy-shapes", config=CONFIG, progress=False)
    real_replace = os.replace

    def killed_at_promotion(source, target):
        if str(source).endswith(".next"):
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr(energyql.io.os, "replace", killed_at_promotion)
    with pytest.raises(KeyboardInterrupt):
        retrained.save(copy)
    monkeypatch.undo()
    loaded = eq.load(copy)  # manifest committed: the staged flows are the artifact's
    assert loaded.manifest.canonical == "color == blue"
    assert torch.equal(loaded.sample(3, seed=1), retrained.sample(3, seed=1))
    retrained.save(copy)
    assert not staged(copy / "flows.safetensors").exists()
    assert torch.equal(eq.load(copy).sample(3, seed=1), retrained.sample(3, seed=1))


def test_flows_swapped_in_from_another_run_are_refused(artifact, tmp_path):
    _, out = artifact
    copy = _copy(out, tmp_path)
    other = eq.train(EXPRESSION, gen="toy-shapes", config=TrainConfig(**{**CONFIG.to_dict(),
                                                                         "seed": 9}),
                     out=tmp_path / "other", progress=False)
    assert other.manifest.flows_sha256
    shutil.copy(tmp_path / "other" / "flows.safetensors", copy / "flows.safetensors")
    with pytest.raises(ArtifactError, match="different runs"):
        eq.load(copy)


# --- checkpoints and resume ----------------------------------------------------------------------

STEPS = TrainConfig(steps=4, batch=8, blocks=2, width=8, checkpoint_every=2)


def _points(tmp_path, config=STEPS, mean=(1.0, 0.0), resume=False, source="quadratic"):
    return train_stage(PointGenerator(), stage(QuadraticEnergy(list(mean), [1.0, 1.0])), config,
                       checkpoint_dir=tmp_path, resume=resume, progress=False, source=source)


def test_resume_refuses_a_checkpoint_of_another_program(tmp_path):
    _points(tmp_path)
    with pytest.raises(CheckpointError, match="belongs to another run: its program") as info:
        _points(tmp_path, resume=True, source="other")
    _names(info.value, "stage1.ckpt.safetensors")


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    _points(tmp_path)
    with pytest.raises(CheckpointError, match="lr=0.001.*lr=0.5"):
        _points(tmp_path, TrainConfig(**{**STEPS.to_dict(), "lr": 0.5}), resume=True)
    # Settings that do not change the result may differ.
    _points(tmp_path, TrainConfig(**{**STEPS.to_dict(), "checkpoint_every": 3}), resume=True)


def test_resume_with_nothing_to_resume_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        _points(tmp_path, resume=True)


def test_a_finished_stage_resumes_to_the_same_flow_without_training(tmp_path):
    first, _ = _points(tmp_path)
    again, log = _points(tmp_path, resume=True)
    assert log.steps == 4
    for p, q in zip(first.flow.state_dict().values(), again.flow.state_dict().values()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("name", ["stage1.ckpt.safetensors", "stage1.optim.pt"])
def test_every_damaged_checkpoint_file_is_refused_naming_it(tmp_path, name, bounded_memory):
    folder = tmp_path / "run"
    _points(folder)
    original = (folder / name).read_bytes()
    for _, data in _damaged_versions(original, seed=3, count=10):
        (folder / name).write_bytes(data)
        with pytest.raises(CheckpointError) as info:
            _points(folder, resume=True)
        _names(info.value, name)


def _point_to_optimizer(folder: Path, payload: bytes) -> None:
    """Put ``payload`` in stage1.optim.pt and record its digest in the weights file, as an
    attacker who rewrote both would."""
    import hashlib

    from safetensors import safe_open
    from safetensors.torch import save_file

    weights = folder / "stage1.ckpt.safetensors"
    with safe_open(str(weights), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    metadata["optim_sha256"] = hashlib.sha256(payload).hexdigest()
    save_file(tensors, str(weights), metadata=metadata)
    (folder / "stage1.optim.pt").write_bytes(payload)


class _RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


MARKER = Path("/tmp") / f"energyql-pwned-{os.getpid()}"


def test_a_malicious_optimizer_pickle_is_refused_and_never_run(tmp_path):
    import io

    _points(tmp_path)
    buffer = io.BytesIO()
    torch.save({"state": {}, "param_groups": [_RunsCode()]}, buffer)
    _point_to_optimizer(tmp_path, buffer.getvalue())
    with pytest.raises(UnsafePickleError, match="stage1.optim.pt"):
        _points(tmp_path, resume=True)
    assert not MARKER.exists()


@pytest.mark.parametrize("content, field", [
    ({}, "top level"),
    ({"state": {}, "param_groups": "x"}, "param_groups"),
    ({"state": {}, "param_groups": [{"params": [0]}]}, "param_groups"),
    ({"state": {0: {"exp_avg": torch.zeros(7, 7)}}, "param_groups": None}, "param_groups"),
    ([1, 2, 3], "top level"),
])
def test_an_optimizer_file_with_wrong_keys_is_refused(tmp_path, content, field):
    import io

    _points(tmp_path)
    buffer = io.BytesIO()
    torch.save(content, buffer)
    _point_to_optimizer(tmp_path, buffer.getvalue())
    with pytest.raises(CheckpointError, match=f"stage1.optim.pt: field '{field}"):
        _points(tmp_path, resume=True)


def test_an_optimizer_tensor_larger_than_its_data_is_refused(tmp_path, bounded_memory):
    import io

    _points(tmp_path)
    bomb = torch.zeros(1).as_strided((10**6, 10**6), (0, 0))
    buffer = io.BytesIO()
    torch.save({"state": {0: {"exp_avg": bomb}}, "param_groups": []}, buffer)
    _point_to_optimizer(tmp_path, buffer.getvalue())
    with pytest.raises(CheckpointError, match="larger than the data behind it"):
        _points(tmp_path, resume=True)


def test_a_checkpoint_without_identity_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    _points(tmp_path)
    weights = tmp_path / "stage1.ckpt.safetensors"
    save_file(load_file(str(weights)), str(weights), metadata={"step": "2"})
    with pytest.raises(CheckpointError, match="field 'identity' is missing"):
        _points(tmp_path, resume=True)


def test_an_interrupted_checkpoint_keeps_weights_and_optimizer_of_one_step(tmp_path, monkeypatch):
    import energyql.io

    real = energyql.io.atomic_write
    saved = []

    def dies_on_the_second_weights(path, write):
        if str(path).endswith("ckpt.safetensors"):
            if saved:
                raise KeyboardInterrupt  # killed while writing the step-4 weights
            saved.append((path, write))
        return real(path, write)

    monkeypatch.setattr(energyql.io, "atomic_write", dies_on_the_second_weights)
    with pytest.raises(KeyboardInterrupt):
        _points(tmp_path)
    monkeypatch.undo()
    assert staged(tmp_path / "stage1.optim.pt").is_file()  # step 4's optimizer state, orphaned
    # The step-2 pair still resumes: the weights name their own optimizer state by digest.
    resumed, log = _points(tmp_path, resume=True)
    assert log.steps == 4 and not staged(tmp_path / "stage1.optim.pt").exists()
    whole, _ = _points(tmp_path / "whole")
    for p, q in zip(whole.flow.state_dict().values(), resumed.flow.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6)


# --- generator files ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/proc/self/environ", "/etc/passwd", "/dev/zero"])
def test_a_generator_path_into_system_files_is_refused(path):
    with pytest.raises(UnknownGeneratorError, match="system file"):
        eq.generators.resolve(f"stylegan2:{path}")


def test_generator_keys_implying_a_huge_resolution_are_refused(tmp_path, bounded_memory):
    from energyql.generators.checkpoints import read_checkpoint

    state = {"input.input": torch.zeros(1, 4, 4, 4),
             "conv1.conv.weight": torch.zeros(1, 4, 4, 3, 3),
             "conv1.conv.modulation.weight": torch.zeros(4, 8)}
    for j in range(30):
        state[f"to_rgbs.{j}.conv.weight"] = torch.zeros(1)
        state[f"convs.{2 * j}.conv.weight"] = torch.zeros(1, 4, 4, 3, 3)
    torch.save({"g_ema": state}, tmp_path / "huge.pt")
    with pytest.raises(CheckpointError, match="resolution of 2\\*\\*32"):
        read_checkpoint(tmp_path / "huge.pt")
    torch.save({"g_ema": {"input.input": torch.zeros(1).as_strided((10**5, 10**5), (0, 0))}},
               tmp_path / "strided.pt")
    with pytest.raises(CheckpointError, match="larger than the data"):
        read_checkpoint(tmp_path / "strided.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(tmp_path / "empty.pt")


# --- output folders ----------------------------------------------------------------------------


def test_a_second_run_on_a_locked_folder_fails_fast(tmp_path):
    out = tmp_path / "out"
    with claim(out), pytest.raises(ArtifactError, match="in use by another"), claim(out):
        pass
    assert not (tmp_path / "out" / LOCK).exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    import socket

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / LOCK).write_text(f"{dead.pid} {socket.gethostname()}\n")
    (folder / ".flows.safetensors.abc123.tmp").write_bytes(b"half")
    with claim(folder):
        assert (folder / LOCK).read_text().split()[0] == str(os.getpid())
        assert not (folder / ".flows.safetensors.abc123.tmp").exists()


def test_a_folder_of_other_files_is_refused_unless_forced(tmp_path):
    (tmp_path / "thesis.tex").write_text("mine")
    with pytest.raises(ArtifactError, match="not an energyql artifact.*thesis.tex"), \
            claim(tmp_path):
        pass
    with claim(tmp_path, force=True):
        pass
    assert (tmp_path / "thesis.tex").read_text() == "mine"


@pytest.mark.parametrize("target", ["/proc/energyql-out", "/sys/x", "file"])
def test_an_unwritable_destination_is_refused_before_any_work(tmp_path, target):
    if target == "file":
        target = tmp_path / "a-file"
        target.write_text("x")
    with pytest.raises(ArtifactError) as info, claim(target):
        pytest.fail("claimed")
    _names(info.value, str(target))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(ArtifactError, match="cannot write into"), claim(tmp_path):
            pass
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize("code, hint", [(errno.EROFS, "choose a folder"),
                                        (errno.ENOSPC, "free some space")])
def test_a_read_only_or_full_file_system_is_refused_before_any_work(tmp_path, monkeypatch, code,
                                                                    hint):
    import energyql.outdir

    def refused(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(energyql.outdir, "open", refused, raising=False)
    with pytest.raises(ArtifactError, match="cannot write into") as info, claim(tmp_path):
        pytest.fail("claimed")
    assert hint in info.value.hint and not (tmp_path / LOCK).exists()


def test_too_little_free_space_is_refused(tmp_path, monkeypatch):
    import energyql.outdir

    monkeypatch.setattr(energyql.outdir.shutil, "disk_usage",
                        lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(ArtifactError, match="only 1 MiB free"), claim(tmp_path):
        pytest.fail("claimed")


@pytest.mark.parametrize("metadata", [{"identity": 3}, {"identity": "[1]"}, {"identity": "{"},
                                      {"identity": '{"program": 1}'}, {"step": 5}])
def test_checkpoint_metadata_of_the_wrong_kind_is_refused(tmp_path, metadata):
    from safetensors.torch import load_file

    _points(tmp_path)
    weights = tmp_path / "stage1.ckpt.safetensors"
    tensors = load_file(str(weights))
    header = {k: {"dtype": "F32", "shape": list(v.shape), "data_offsets": [0, 0]}
              for k, v in tensors.items()}
    body, position = b"", 0
    for k, v in tensors.items():
        raw = v.contiguous().numpy().tobytes()
        header[k]["data_offsets"] = [position, position + len(raw)]
        body, position = body + raw, position + len(raw)
    header["__metadata__"] = metadata  # values that are not strings, as no writer makes them
    text = json.dumps(header).encode()
    weights.write_bytes(struct.pack("<Q", len(text)) + text + body)
    with pytest.raises(CheckpointError) as info:
        _points(tmp_path, resume=True)
    _names(info.value, "stage1.ckpt.safetensors")


def test_a_spline_artifact_from_zukos_couplings_says_to_train_it_again(tmp_path):
    """Spline flows first came from zuko's NSF (2026-12-07); energyql's own couplings hold other
    tensors, and such an artifact is refused with a reason instead of loading wrong."""
    from safetensors.torch import load_file, save_file

    register_tiny()
    out = tmp_path / "spline"
    eq.train("color == red", gen="toy-shapes", out=out, progress=False,
             config=TrainConfig(steps=2, batch=8, blocks=2, width=8, moment_samples=64,
                                refit_every=0, coupling="spline"))
    tensors = load_file(str(out / "flows.safetensors"))
    assert any(".couplings.0.net." in k for k in tensors)
    old = {k.replace(".couplings.", ".nsf.transform.transforms."): v for k, v in tensors.items()}
    save_file(old, str(out / "flows.safetensors"))
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["flows_sha256"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="is missing") as caught:
        eq.load(out)
    assert "zuko's couplings" in caught.value.hint
