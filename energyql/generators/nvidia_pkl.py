"""Import NVIDIA StyleGAN2 pickles (stylegan2-ada-pytorch, stylegan3) without running their code.

NVIDIA's network pickles carry the Python source of their classes
(``torch_utils.persistence``), which a plain ``pickle.load`` would ``exec``. Here a restricted
unpickler resolves only a short list of harmless names (tensor and storage rebuilders, a few
containers, numpy scalars); every persistent object becomes an inert record of its class name
and attribute dict, and its embedded source is discarded unread. Anything else a pickle asks
for (``os.system``, ``builtins.eval``, ...) stops loading with :class:`UnsafePickleError`.

The ``G_ema`` network found this way is then renamed into the rosinality layout that
:mod:`energyql.generators.stylegan2` loads.

Example:
    >>> checkpoint = convert("stylegan2-ffhq-1024x1024.pkl")     # doctest: +SKIP
    >>> torch.save(checkpoint, "ffhq.pt")                         # doctest: +SKIP
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

# CheckpointError and UnsafePickleError live in energyql.errors; imported here for old paths too.
from energyql.errors import CheckpointError, UnsafePickleError, WeightsMissingError
from energyql.generators.fir import fir_kernel

__all__ = ["UnsafePickleError", "PersistentRecord", "read_pickle", "convert", "convert_file"]

# The rosinality format fixes the mapping network's learning-rate multiplier at 0.01.
_ROSINALITY_LR_MLP = 0.01


class PersistentRecord:
    """An inert stand-in for a pickled object: its class name and its attribute dict."""

    def __init__(self, class_name: str, state: dict | None = None, module: str = ""):
        self.class_name = class_name
        self.module = module
        self.state = dict(state or {})

    def __setstate__(self, state):  # used when an object was pickled by class, not by source
        self.state = dict(state) if isinstance(state, dict) else {"state": state}

    def __repr__(self) -> str:
        return f"PersistentRecord({self.class_name!r})"

    def submodule(self, name: str) -> PersistentRecord | None:
        return self.state.get("_modules", {}).get(name)

    def attribute(self, name: str, default: Any = None) -> Any:
        return self.state.get(name, default)

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """Return every parameter and buffer below this module, with dotted names."""
        out: dict[str, torch.Tensor] = {}
        for group in ("_parameters", "_buffers"):
            for name, tensor in (self.state.get(group) or {}).items():
                if isinstance(tensor, torch.Tensor):
                    out[prefix + name] = tensor
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistentRecord):
                out.update(child.tensors(f"{prefix}{name}."))
        return out


def _reconstruct_persistent(meta: dict) -> PersistentRecord:
    # ``meta["module_src"]`` is the embedded source code; it is deliberately never looked at.
    if not isinstance(meta, dict) or "class_name" not in meta:
        raise UnsafePickleError("malformed persistent object in the pickle")
    return PersistentRecord(str(meta["class_name"]), meta.get("state") or {})


def _storage_from_bytes(data: bytes):
    # torch pickles each storage as a nested torch.save blob; read it with the safe loader.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _numpy_scalar(dtype, data=None):
    if dtype.hasobject:  # an object scalar's payload is an already-unpickled object
        return data
    return np.frombuffer(data, dtype=dtype)[0]


class _AttrDict(dict):
    """Stand-in for ``dnnlib.EasyDict``: a dict (attribute access is not needed here)."""


def _record_class(module: str, name: str) -> type:
    """Return an inert class for a network class that was pickled by reference."""
    def __init__(self, *args, **kwargs):  # constructor arguments are ignored
        PersistentRecord.__init__(self, name, {}, module)

    # NEWOBJ creates instances without __init__; BUILD then calls __setstate__.
    return type(name, (PersistentRecord,), {"__init__": __init__, "class_name": name,
                                            "module": module, "state": {}})


_SAFE: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("dnnlib.util", "EasyDict"): _AttrDict,
    ("dnnlib", "EasyDict"): _AttrDict,
    ("numpy", "dtype"): np.dtype,
    ("numpy", "ndarray"): np.ndarray,
}
# ndarray reconstruction only allocates an array of an already-allowed type.
_multiarray = getattr(np, "_core", None) or np.core  # numpy 2 renamed numpy.core
for _core in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _SAFE[(_core, "scalar")] = _numpy_scalar
    _SAFE[(_core, "_reconstruct")] = _multiarray.multiarray._reconstruct

# Modules whose classes may appear when a network was pickled by reference rather than with its
# source; they become inert records.
_NETWORK_MODULES = ("training.networks", "training.networks_stylegan2", "training.augment")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _SAFE:
            return _SAFE[(module, name)]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module in _NETWORK_MODULES and name.isidentifier():
            return _record_class(module, name)
        raise UnsafePickleError(
            f"refusing to unpickle '{module}.{name}': a StyleGAN2 network pickle has no need "
            "for it, and it could run code",
            hint="only NVIDIA stylegan2-ada / stylegan3 network pickles are accepted; "
                 "nothing from this file was executed")

    def persistent_load(self, pid):
        raise UnsafePickleError("the pickle uses persistent ids, which network pickles do not")


def read_pickle(source: str | Path | bytes) -> Any:
    """Return the contents of an NVIDIA network pickle, with networks as :class:`PersistentRecord`.

    ``source`` is a path or the pickle's bytes. Raises :class:`UnsafePickleError` for anything
    that would need code to run.
    """
    if isinstance(source, (bytes, bytearray)):
        return _unpickle(io.BytesIO(source), "<bytes>")
    path = Path(source).expanduser()
    if not path.is_file():
        raise WeightsMissingError(f"pickle '{path}' not found")
    with path.open("rb") as stream:
        return _unpickle(stream, str(path))


def _unpickle(stream, name: str) -> Any:
    try:
        data = _RestrictedUnpickler(stream).load()
        _check_tensor_sizes(data, name)
        return data
    except UnsafePickleError as error:
        raise UnsafePickleError(f"'{name}': {error.message}", hint=error.hint) from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError,
            RuntimeError, IndexError, KeyError) as error:
        raise CheckpointError(f"cannot read '{name}' as an NVIDIA network pickle: "
                              f"{type(error).__name__}: {error}") from None


def _check_tensor_sizes(value: Any, name: str, depth: int = 0,
                        seen: set[int] | None = None) -> None:
    """Refuse any tensor that claims more bytes than its storage holds (a stride-0 "bomb").

    Such a tensor costs nothing to unpickle, but the first copy of it (the conversion's
    rescaling, ``.float()``) allocates all it claims: 4 TB for a 1-element storage viewed as
    a (2**20, 2**20) float32 matrix. Every tensor below ``value`` (containers and the state of
    persistent records) is bounded here, before any is touched.
    """
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    if depth > 64:
        raise CheckpointError(f"'{name}': objects are nested too deeply for a network pickle")
    if isinstance(value, torch.Tensor):
        claimed = value.numel() * value.element_size()
        if claimed > value.untyped_storage().nbytes():
            raise CheckpointError(
                f"'{name}': a tensor of shape {list(value.shape)} claims {claimed:,} bytes but "
                f"only {value.untyped_storage().nbytes():,} are behind it (larger than the "
                "data in the file)", hint="the file is damaged or hostile; nothing was copied")
        return
    if isinstance(value, (dict, list, tuple, set, frozenset, PersistentRecord)):
        seen.add(id(value))
        items = value.state.values() if isinstance(value, PersistentRecord) else \
            value.values() if isinstance(value, dict) else value
        for item in items:
            _check_tensor_sizes(item, name, depth + 1, seen)


# ---------------------------------------------------------------------------------------------
# NVIDIA layout -> rosinality layout.


def _gain(record: PersistentRecord, name: str, default: float) -> float:
    value = record.attribute(name, default)
    return float(value)


def _rescaled(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    # Bit-exact copies when the stored convention already matches.
    return tensor.clone() if math.isclose(factor, 1.0, rel_tol=1e-12) else tensor * factor


def _linear(record: PersistentRecord | None, where: str, *,
            target_lr: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(weight, bias)`` rescaled to rosinality's convention for a FullyConnectedLayer.

    NVIDIA computes ``x @ (weight * weight_gain).T + bias * bias_gain``; rosinality computes the
    same with ``weight_gain = lr / sqrt(in)`` and ``bias_gain = lr`` for a fixed ``lr``.
    """
    if record is None:
        raise CheckpointError(f"{where} is missing")
    weight = record.tensors().get("weight")
    bias = record.tensors().get("bias")
    if weight is None or bias is None:
        raise CheckpointError(f"{where}: a fully connected layer without weight or bias")
    fan_in = weight.shape[1]
    weight_gain = _gain(record, "weight_gain", 1.0 / math.sqrt(fan_in))
    bias_gain = _gain(record, "bias_gain", 1.0)
    return (_rescaled(weight.float(), weight_gain / (target_lr / math.sqrt(fan_in))),
            _rescaled(bias.float(), bias_gain / target_lr))


def _find_generator(data: Any) -> PersistentRecord:
    if isinstance(data, PersistentRecord):
        return data
    if isinstance(data, dict):
        for key in ("G_ema", "G"):
            if isinstance(data.get(key), PersistentRecord):
                return data[key]
    raise CheckpointError("the pickle holds no generator network ('G_ema')",
                          hint="expected a stylegan2-ada-pytorch or stylegan3 network pickle")


def convert(source: str | Path | bytes) -> dict[str, Any]:
    """Return a rosinality-format checkpoint ``{"g_ema": state_dict, "latent_avg": w_avg}``.

    Reads the pickle safely (see :func:`read_pickle`) and renames the ``G_ema`` StyleGAN2
    generator's weights. Raises :class:`CheckpointError` for networks this layout cannot express
    (StyleGAN3, conditional, 'orig'/'resnet' synthesis, z_dim != w_dim).
    """
    gen = _find_generator(read_pickle(source))
    mapping, synthesis = gen.submodule("mapping"), gen.submodule("synthesis")
    if mapping is None or synthesis is None:
        raise CheckpointError(f"'{gen.class_name}' is not a StyleGAN2 generator "
                              "(no mapping/synthesis networks)")
    if synthesis.submodule("b4") is None:
        raise CheckpointError("the generator is not a StyleGAN2 network (no 4x4 block 'b4'); "
                              "StyleGAN3 networks are not supported")
    if mapping.submodule("embed") is not None or int(mapping.attribute("c_dim", 0) or 0):
        raise CheckpointError("conditional generators (c_dim > 0) are not supported")

    sd: dict[str, torch.Tensor] = {}
    # Mapping network: fc0..fc{n-1} -> style.1..style.n (style.0 is the pixel norm).
    n_mlp = 0
    while (fc := mapping.submodule(f"fc{n_mlp}")) is not None:
        if fc.attribute("activation", "lrelu") != "lrelu":
            raise CheckpointError(f"mapping layer fc{n_mlp} uses activation "
                                  f"'{fc.attribute('activation')}'; only 'lrelu' is supported")
        weight, bias = _linear(fc, f"mapping.fc{n_mlp}", target_lr=_ROSINALITY_LR_MLP)
        if weight.shape[0] != weight.shape[1]:
            raise CheckpointError("mapping layers with z_dim or layer_features different from "
                                  f"w_dim are not supported (fc{n_mlp} is {tuple(weight.shape)})")
        sd[f"style.{n_mlp + 1}.weight"], sd[f"style.{n_mlp + 1}.bias"] = weight, bias
        n_mlp += 1

    blocks: list[tuple[int, PersistentRecord]] = []
    res = 4
    while (found := synthesis.submodule(f"b{res}")) is not None:
        blocks.append((res, found))
        res *= 2

    def styled(layer: PersistentRecord | None, target: str, noise_index: int, where: str):
        if layer is None:
            raise CheckpointError(f"{where} is missing")
        t = layer.tensors()
        if "noise_const" not in t:
            raise CheckpointError(f"{where} has no noise input; not a standard StyleGAN2 layer")
        sd[f"{target}.conv.weight"] = t["weight"].float().unsqueeze(0)
        sd[f"{target}.conv.modulation.weight"], sd[f"{target}.conv.modulation.bias"] = \
            _linear(layer.submodule("affine"), f"{where}.affine", target_lr=1.0)
        sd[f"{target}.noise.weight"] = t["noise_strength"].float().reshape(1)
        sd[f"{target}.activate.bias"] = t["bias"].float()
        sd[f"noises.noise_{noise_index}"] = t["noise_const"].float().reshape(
            1, 1, *t["noise_const"].shape[-2:])
        if int(layer.attribute("up", 1)) == 2:
            sd[f"{target}.conv.blur.kernel"] = _filter(layer, where)

    def to_rgb(layer: PersistentRecord | None, target: str, where: str, upsample_from=None):
        if layer is None:
            raise CheckpointError(f"{where}: every block needs a 'torgb' layer (the 'skip' "
                                  "architecture); 'orig' and 'resnet' generators are not supported")
        t = layer.tensors()
        weight = t["weight"].float()
        if weight.shape[0] != 3:
            raise CheckpointError(f"{where} outputs {weight.shape[0]} channels; "
                                  "only RGB is supported")
        # NVIDIA folds 1/sqrt(fan_in) into the styles (weight_gain); rosinality applies the same
        # factor to the weight, so the affine layer copies unchanged.
        sd[f"{target}.conv.weight"] = weight.unsqueeze(0)
        sd[f"{target}.conv.modulation.weight"], sd[f"{target}.conv.modulation.bias"] = \
            _linear(layer.submodule("affine"), f"{where}.affine", target_lr=1.0)
        sd[f"{target}.bias"] = t["bias"].float().reshape(1, 3, 1, 1)
        if upsample_from is not None:
            sd[f"{target}.upsample.kernel"] = _filter(upsample_from, where)

    for j, (res, block) in enumerate(blocks):
        where = f"synthesis.b{res}"
        if block.submodule("skip") is not None:
            raise CheckpointError(f"{where} uses the 'resnet' architecture; only 'skip' "
                                  "generators are supported")
        if res == 4:
            const = block.tensors().get("const")
            if const is None:
                raise CheckpointError(f"{where} has no learned constant input")
            sd["input.input"] = const.float().unsqueeze(0)
            styled(block.submodule("conv1"), "conv1", 0, f"{where}.conv1")
            to_rgb(block.submodule("torgb"), "to_rgb1", f"{where}.torgb")
        else:
            k = j - 1
            styled(block.submodule("conv0"), f"convs.{2 * k}", 2 * k + 1, f"{where}.conv0")
            styled(block.submodule("conv1"), f"convs.{2 * k + 1}", 2 * k + 2, f"{where}.conv1")
            to_rgb(block.submodule("torgb"), f"to_rgbs.{k}", f"{where}.torgb", upsample_from=block)

    w_avg = mapping.tensors().get("w_avg")
    return {"g_ema": sd, "latent_avg": None if w_avg is None else w_avg.float().clone()}


def _filter(record: PersistentRecord, where: str) -> torch.Tensor:
    """Return the resampling kernel of a layer, scaled as rosinality stores it (gain 4)."""
    f = record.tensors().get("resample_filter")
    if f is None:
        return fir_kernel((1, 3, 3, 1), gain=4.0)
    if f.shape != (4, 4):
        raise CheckpointError(f"{where} resamples with a {tuple(f.shape)} filter; "
                              "only 4-tap filters are supported")
    return f.float() * 4.0


def convert_file(source: str | Path, target: str | Path) -> Path:
    """Convert an NVIDIA ``.pkl`` to a rosinality ``.pt`` file and return its path."""
    target = Path(target).expanduser()
    checkpoint = convert(source)
    checkpoint = {k: v for k, v in checkpoint.items() if v is not None}
    tmp = target.with_name(target.name + ".partial")
    try:
        torch.save(checkpoint, tmp)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)  # only still there if saving failed
    return target
