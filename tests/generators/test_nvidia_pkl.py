"""NVIDIA StyleGAN2 pickles: safe reading and conversion to the rosinality layout.

The pickles here are built in the test to mimic stylegan2-ada-pytorch's: a dict with ``G_ema``,
every network pickled through ``torch_utils.persistence._reconstruct_persistent_obj`` with its
module source and its ``__dict__`` (``_parameters``, ``_buffers``, ``_modules``, gains as numpy
scalars). The embedded source would create a marker file if it were ever executed.
"""

import collections
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

from energyql.errors import EnergyQLError
from energyql.generators import load as load_generator
from energyql.generators.nvidia_pkl import (
    PersistentRecord,
    UnsafePickleError,
    convert,
    convert_file,
    read_pickle,
)
from energyql.generators.stylegan2 import CheckpointError, StyleGAN2, from_state_dict, load
from tests.generators.sg2_helpers import seeded_state_dict

STYLE_DIM = 16


@pytest.fixture
def persistence(monkeypatch, tmp_path):
    """Install a stand-in ``torch_utils.persistence`` so that pickle can name it."""
    package = types.ModuleType("torch_utils")
    module = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # never called: the test only pickles
        raise AssertionError("the real reconstructor must not run")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    module._reconstruct_persistent_obj = _reconstruct_persistent_obj
    package.persistence = module
    monkeypatch.setitem(sys.modules, "torch_utils", package)
    monkeypatch.setitem(sys.modules, "torch_utils.persistence", module)
    marker = tmp_path / "source-was-executed"
    return _reconstruct_persistent_obj, marker


class Persistent:
    """Pickles the way an NVIDIA ``@persistent_class`` module does."""

    def __init__(self, reconstruct, marker, class_name, params=None, buffers=None, modules=None,
                 **attributes):
        self.reconstruct, self.marker, self.class_name = reconstruct, marker, class_name
        self.state = {
            "training": False,
            "_parameters": collections.OrderedDict(
                (k, torch.nn.Parameter(v, requires_grad=False)) for k, v in (params or {}).items()),
            "_buffers": collections.OrderedDict(buffers or {}),
            "_non_persistent_buffers_set": set(),
            "_modules": collections.OrderedDict(modules or {}),
            "_init_args": (), "_init_kwargs": {}, **attributes,
        }

    def __reduce__(self):
        source = f"import pathlib\npathlib.Path({str(self.marker)!r}).write_text('ran')\n"
        meta = {"type": "class", "version": 6, "module_src": source, "class_name": self.class_name,
                    "state": self.state}
        return (self.reconstruct, (meta,))


def nvidia_layout(sd, make, *, lr=0.01):
    """Build NVIDIA-style records from a rosinality state dict (the inverse of the converter)."""
    n_mlp = sum(1 for k in sd if k.startswith("style.") and k.endswith(".weight"))
    fcs = {}
    for i in range(n_mlp):
        w, b = sd[f"style.{i + 1}.weight"], sd[f"style.{i + 1}.bias"]
        # Store under a different lr multiplier with the same effective weights.
        fcs[f"fc{i}"] = make("FullyConnectedLayer", params={
            "weight": w * (0.01 / lr), "bias": b * (0.01 / lr)}, activation="lrelu",
            weight_gain=np.float64(lr / math.sqrt(w.shape[1])), bias_gain=lr)
    mapping = make("MappingNetwork", buffers={"w_avg": torch.randn(STYLE_DIM)},
                   modules=fcs, z_dim=STYLE_DIM, c_dim=0, w_dim=STYLE_DIM)

    def affine(prefix):
        w = sd[prefix + ".modulation.weight"]
        bias = sd[prefix + ".modulation.bias"]
        return make("FullyConnectedLayer", params={"weight": w, "bias": bias}, activation="linear",
                    weight_gain=np.float64(1 / math.sqrt(w.shape[1])),
                    bias_gain=1)

    def layer(prefix, noise, up):
        return make("SynthesisLayer", params={
            "weight": sd[prefix + ".conv.weight"][0],
            "noise_strength": sd[prefix + ".noise.weight"][0],
            "bias": sd[prefix + ".activate.bias"]}, buffers={
            "resample_filter": sd.get(prefix + ".conv.blur.kernel", torch.full((4, 4), 4 / 64)) / 4,
            "noise_const": sd[noise][0, 0]}, modules={"affine": affine(prefix + ".conv")},
            up=up, activation="lrelu", conv_clamp=256)

    def torgb(prefix):
        w = sd[prefix + ".conv.weight"][0]
        return make("ToRGBLayer", params={"weight": w, "bias": sd[prefix + ".bias"].flatten()},
                    modules={"affine": affine(prefix + ".conv")},
                    weight_gain=np.float64(1 / math.sqrt(w.shape[1])), conv_clamp=256)

    filt = torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64
    blocks = {"b4": make("SynthesisBlock", params={"const": sd["input.input"][0]},
                         buffers={"resample_filter": filt},
                         modules={"conv1": layer("conv1", "noises.noise_0", 1),
                                  "torgb": torgb("to_rgb1")}, architecture="skip")}
    k = 0
    while f"to_rgbs.{k}.conv.weight" in sd:
        blocks[f"b{2 ** (k + 3)}"] = make("SynthesisBlock", buffers={"resample_filter": filt},
                                          modules={
            "conv0": layer(f"convs.{2 * k}", f"noises.noise_{2 * k + 1}", 2),
            "conv1": layer(f"convs.{2 * k + 1}", f"noises.noise_{2 * k + 2}", 1),
            "torgb": torgb(f"to_rgbs.{k}")}, architecture="skip")
        k += 1
    synthesis = make("SynthesisNetwork", modules=blocks)
    return make("Generator", modules={"mapping": mapping, "synthesis": synthesis},
                z_dim=STYLE_DIM, c_dim=0, w_dim=STYLE_DIM, img_channels=3), mapping


def tiny_state_dict(size=16, seed=3):
    channels = {2 ** i: 8 for i in range(2, 11)}
    net = StyleGAN2(size, STYLE_DIM, 2, channels=channels)
    return seeded_state_dict(net.state_dict(), seed)


def write_pickle(path, persistence, sd, **kw):
    reconstruct, marker = persistence

    def make(name, **fields):
        return Persistent(reconstruct, marker, name, **fields)

    generator, mapping = nvidia_layout(sd, make, **kw)
    data = {"G": generator, "D": make("Discriminator"), "G_ema": generator,
            "augment_pipe": None, "training_set_kwargs": {"resolution": 16}}
    path.write_bytes(pickle.dumps(data, protocol=4))
    return path, mapping.state["_buffers"]["w_avg"]


def test_reads_records_without_running_source(tmp_path, persistence):
    path, _ = write_pickle(tmp_path / "net.pkl", persistence, tiny_state_dict())
    data = read_pickle(path)
    assert isinstance(data["G_ema"], PersistentRecord)
    assert data["G_ema"].class_name == "Generator"
    assert data["training_set_kwargs"] == {"resolution": 16}
    assert isinstance(data["G_ema"].submodule("mapping").submodule("fc0").attribute("weight_gain"),
                      np.floating)
    assert not persistence[1].exists()


def test_convert_reproduces_the_rosinality_state_dict(tmp_path, persistence):
    sd = tiny_state_dict()
    path, w_avg = write_pickle(tmp_path / "net.pkl", persistence, sd)
    checkpoint = convert(path)
    assert set(checkpoint["g_ema"]) == set(sd)
    for key, value in sd.items():
        assert torch.equal(checkpoint["g_ema"][key], value), key
    assert torch.equal(checkpoint["latent_avg"], w_avg)
    assert not persistence[1].exists()


def test_convert_folds_another_mapping_lr_multiplier(tmp_path, persistence):
    sd = tiny_state_dict()
    path, _ = write_pickle(tmp_path / "net.pkl", persistence, sd, lr=0.05)
    converted = from_state_dict(convert(path)["g_ema"]).eval()
    original = from_state_dict(sd).eval()
    z = torch.randn(2, STYLE_DIM)
    with torch.no_grad():
        assert torch.allclose(converted([z], randomize_noise=False)[0],
                              original([z], randomize_noise=False)[0], atol=1e-5)


def test_pkl_loads_through_the_registry_and_convert_file(tmp_path, persistence):
    path, _ = write_pickle(tmp_path / "net.pkl", persistence, tiny_state_dict())
    gen = load_generator(f"stylegan2:{path}", truncation=0.7)
    assert gen.image_size == 16 and gen.latent_dim == STYLE_DIM
    assert gen.decode(torch.randn(2, STYLE_DIM)).shape == (2, 3, 16, 16)
    target = convert_file(path, tmp_path / "net.pt")
    assert load(target).size == 16
    assert not list(tmp_path.glob("*.partial"))
    assert not persistence[1].exists()


def test_unsupported_networks_fail_clearly(tmp_path, persistence):
    reconstruct, marker = persistence

    def make(name, **fields):
        return Persistent(reconstruct, marker, name, **fields)

    sg3 = make("Generator", modules={"mapping": make("MappingNetwork"),
                                     "synthesis": make("SynthesisNetwork", modules={
                                         "L0_36_512": make("SynthesisLayer")})})
    (tmp_path / "sg3.pkl").write_bytes(pickle.dumps({"G_ema": sg3}))
    with pytest.raises(CheckpointError, match="StyleGAN3"):
        convert(tmp_path / "sg3.pkl")
    (tmp_path / "none.pkl").write_bytes(pickle.dumps({"training_set_kwargs": {}}))
    with pytest.raises(CheckpointError, match="G_ema"):
        convert(tmp_path / "none.pkl")
    (tmp_path / "broken.pkl").write_bytes(pickle.dumps({"a": 1})[:-3])
    with pytest.raises(CheckpointError, match="cannot read"):
        convert(tmp_path / "broken.pkl")


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


def _raw_global_pickle(module, name):
    """A protocol-0 pickle calling ``module.name('x')`` (GLOBAL + REDUCE)."""
    return f"c{module}\n{name}\n(S'x'\ntR.".encode()


@pytest.mark.parametrize("payload", [
    lambda marker: pickle.dumps({"G_ema": _System(f"touch {marker}")}),
    lambda marker: pickle.dumps([_Eval()]),
    lambda marker: _raw_global_pickle("subprocess", "getoutput"),
    lambda marker: _raw_global_pickle("builtins", "exec"),
    lambda marker: _raw_global_pickle("torch", "load"),
    lambda marker: _raw_global_pickle("builtins", "getattr"),
], ids=["os.system", "eval", "subprocess", "exec", "torch.load", "getattr"])
def test_pickles_that_would_run_code_are_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(payload(marker))
    with pytest.raises(UnsafePickleError, match="refusing") as info:
        convert(evil)
    assert isinstance(info.value, EnergyQLError)
    assert "nothing from this file was executed" in str(info.value)
    with pytest.raises(UnsafePickleError):
        load_generator(f"stylegan2:{evil}")
    assert not marker.exists()


def test_error_classes_come_from_the_error_module_under_their_old_paths_too():
    from energyql import errors, hub
    from energyql.generators import checkpoints, nvidia_pkl, stylegan2

    assert nvidia_pkl.UnsafePickleError is errors.UnsafePickleError
    assert stylegan2.CheckpointError is errors.CheckpointError
    assert hub.DigestMismatchError is errors.DigestMismatchError
    assert stylegan2.read_checkpoint is checkpoints.read_checkpoint


def test_pickle_converter_does_not_import_the_network_module():
    import ast as pyast
    import inspect

    from energyql.generators import checkpoints, fir, nvidia_pkl

    def imported(module):
        tree = pyast.parse(inspect.getsource(module))
        return {node.module for node in pyast.walk(tree) if isinstance(node, pyast.ImportFrom)}

    # stylegan2 -> checkpoints -> nvidia_pkl -> fir: no module below imports one above it.
    assert "energyql.generators.stylegan2" not in imported(nvidia_pkl) | imported(checkpoints)
    assert not {m for m in imported(fir) if m and m.startswith("energyql")}
