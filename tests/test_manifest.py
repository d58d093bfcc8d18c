"""The typed manifest: format-1 files written by earlier code load, bad ones are refused."""

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import energyql as eq
from energyql.errors import ArtifactError
from energyql.manifest import MAX_BLOCKS, MAX_WIDTH, Manifest
from tests.toys import register_tiny

# Written by the code before the typed manifest.
FORMAT1 = Path(__file__).parent / "data" / "format1"


def _format1() -> dict:
    return json.loads((FORMAT1 / "manifest.json").read_text())


def test_a_format1_manifest_round_trips_to_the_same_json():
    data = _format1()
    manifest = Manifest.from_dict(data)
    assert manifest.canonical == "color == red | then uniform(size)"
    assert manifest.generator.id == "toy-shapes" and manifest.generator.latent_dim == 8
    assert [s.index for s in manifest.stages] == [1, 2]
    second = manifest.stages[1]
    assert second.flow.blocks == 2 and second.train is not None and second.train.steps == 3
    assert second.exact_lambdas()["uniform(size)"] == (4999.993164, -4999.993164)
    assert manifest.to_dict() == data
    assert json.loads(manifest.to_json()) == data


def test_an_artifact_written_by_the_old_code_loads_and_samples_the_same_images():
    register_tiny()
    artifact = eq.load(FORMAT1)
    expected = load_file(str(FORMAT1 / "expected_samples.safetensors"))["images"]
    # The same images up to float rounding, which differs between CPU kinds (2.4e-7 on an AMD
    # EPYC against the machine that wrote them).
    torch.testing.assert_close(artifact.sample(4, seed=5), expected, rtol=0, atol=1e-5)


def _refused(data, field: str, tmp_path: Path) -> ArtifactError:
    # NaN and infinity cannot even be written as strict JSON; they reach from_dict only from
    # lenient writers, so those cases are handed over as data (the file reader refuses them
    # as invalid JSON, see below).
    path = tmp_path / "manifest.json"
    with pytest.raises(ArtifactError) as info:
        try:
            text = json.dumps(data, allow_nan=False)
        except ValueError:
            Manifest.from_dict(data, str(path))
        else:
            path.write_text(text)
            Manifest.read(tmp_path)
    message = str(info.value).splitlines()[0]
    assert f"'{field}'" in message, message
    assert "manifest.json" in message  # names the file
    return info.value


def _with(change) -> dict:
    data = copy.deepcopy(_format1())
    change(data)
    return data


BAD = [
    ("list instead of an object", lambda d: None, "top level"),
    ("missing generator", lambda d: d.pop("generator"), "generator"),
    ("generator a string", lambda d: d.update(generator="toy-shapes"), "generator"),
    ("missing generator id", lambda d: d["generator"].pop("id"), "generator.id"),
    ("generator id a number", lambda d: d["generator"].update(id=3), "generator.id"),
    ("generator id a system file", lambda d: d["generator"].update(id="stylegan2:/etc/passwd"),
     "generator.id"),
    ("generator id climbing out", lambda d: d["generator"].update(id="stylegan2:a/../../x.pkl"),
     "generator.id"),
    ("generator id with a newline", lambda d: d["generator"].update(id="shapes\nrm"),
     "generator.id"),
    ("stages a string", lambda d: d.update(stages="stage1"), "stages"),
    ("stage a list", lambda d: d["stages"].__setitem__(0, [1, 2]), "stages[0]"),
    ("stages out of order", lambda d: d["stages"].reverse(), "stages"),
    ("huge blocks", lambda d: d["stages"][0]["flow"].update(blocks=1_000_000),
     "stages[0].flow.blocks"),
    ("huge width", lambda d: d["stages"][1]["flow"].update(width=10**9), "stages[1].flow.width"),
    ("huge dim", lambda d: d["stages"][0]["flow"].update(dim=1 << 20), "stages[0].flow.dim"),
    ("blocks x width too large together",
     lambda d: d["stages"][0]["flow"].update(blocks=MAX_BLOCKS, width=MAX_WIDTH, dim=4096),
     "stages"),
    ("blocks a float", lambda d: d["stages"][0]["flow"].update(blocks=2.5),
     "stages[0].flow.blocks"),
    ("blocks a boolean", lambda d: d["stages"][0]["flow"].update(blocks=True),
     "stages[0].flow.blocks"),
    ("negative width", lambda d: d["stages"][0]["flow"].update(width=-4), "stages[0].flow.width"),
    ("huge Fourier features", lambda d: d["stages"][0]["flow"].update(frequencies=10**6),
     "stages[0].flow.frequencies"),
    ("Fourier features a float", lambda d: d["stages"][0]["flow"].update(frequencies=2.5),
     "stages[0].flow.frequencies"),
    ("unknown flow key", lambda d: d["stages"][0]["flow"].update(kind="realnvp"),
     "stages[0].flow.kind"),
    ("unknown stage key", lambda d: d["stages"][0].update(extra=1), "stages[0].extra"),
    ("unknown top-level key", lambda d: d.update(payload="x"), "payload"),
    ("context_dim without context", lambda d: d["stages"][0]["flow"].update(context_dim=2),
     "stages[0].flow.context_dim"),
    ("context entry missing its range", lambda d: d["stages"][0].update(
        context=[{"control": "pose", "name": "x", "low": 0.0}]), "stages[0].context[0].high"),
    ("NaN λ", lambda d: d["stages"][1]["lambda_exact"].update({"uniform(size)": [math.nan, 0.0]}),
     "stages[1].lambda_exact.uniform(size)"),
    ("infinite λ", lambda d: d["stages"][1]["lambda"].update({"uniform(size)": [math.inf, 0.0]}),
     "stages[1].lambda.uniform(size)"),
    ("λ a string", lambda d: d["stages"][1]["lambda"].update({"uniform(size)": "0.5"}),
     "stages[1].lambda.uniform(size)"),
    ("λ of the wrong length",
     lambda d: d["stages"][1]["lambda_exact"].update({"uniform(size)": [0.1, 0.2, 0.3]}),
     "stages[1].lambda_exact.uniform(size)"),
    ("λ of no constraint", lambda d: d["stages"][1]["lambda"].update({"uniform(color)": [0.0]}),
     "stages[1].lambda.uniform(color)"),
    ("canonical that does not parse", lambda d: d.update(canonical="color == "), "canonical"),
    ("canonical with another stage count", lambda d: d.update(canonical="uniform(size)"),
     "canonical"),
    ("format 2", lambda d: d.update(format=2), "format"),
    ("no format", lambda d: d.pop("format"), "format"),
    ("NaN in the train settings", lambda d: d["stages"][0]["train"].update(lr=math.nan),
     "stages[0].train.lr"),
    ("NaN final loss", lambda d: d["stages"][0].update(final_loss=math.nan),
     "stages[0].final_loss"),
    ("metrics a list", lambda d: d.update(metrics=[1]), "metrics"),
    ("negative image count", lambda d: d["stages"][0]["train"].update(images=-1),
     "stages[0].train.images"),
    ("image count a string", lambda d: d["stages"][0]["train"].update(images_backward="9"),
     "stages[0].train.images_backward"),
    ("fits a dict", lambda d: d["stages"][0].update(fits={}), "stages[0].fits"),
]


@pytest.mark.parametrize("change, field", [(c, f) for _, c, f in BAD], ids=[n for n, _, _ in BAD])
def test_a_bad_manifest_is_refused_naming_the_field(change, field, tmp_path):
    data = [1, 2] if field == "top level" else _with(change)
    error = _refused(data, field, tmp_path)
    assert error.hint


def test_huge_sizes_are_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    import energyql.flows

    def no_flow(*args, **kwargs):
        raise AssertionError("a flow was built from a refused manifest")

    monkeypatch.setattr(energyql.flows.LatentFlow, "__init__", no_flow)
    data = _with(lambda d: d["stages"][0]["flow"].update(blocks=1_000_000, width=10**9))
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    (tmp_path / "flows.safetensors").write_bytes((FORMAT1 / "flows.safetensors").read_bytes())
    register_tiny()
    with pytest.raises(ArtifactError, match="flow.width|flow.blocks"):
        eq.load(tmp_path)


def test_a_flow_dim_other_than_the_generators_latent_size_is_refused_on_load(tmp_path):
    register_tiny()
    data = _with(lambda d: d["stages"][0]["flow"].update(dim=16))
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    (tmp_path / "flows.safetensors").write_bytes((FORMAT1 / "flows.safetensors").read_bytes())
    with pytest.raises(ArtifactError, match=r"stages\[0\]\.flow\.dim.*latent size 8"):
        eq.load(tmp_path)


@pytest.mark.parametrize("text", ["{not json", "", "[1, NaN]", '{"format": Infinity}', "\xff\xfe"])
def test_text_that_is_not_strict_json_is_refused(text, tmp_path):
    (tmp_path / "manifest.json").write_bytes(text.encode("latin-1"))
    with pytest.raises(ArtifactError, match="not valid JSON"):
        Manifest.read(tmp_path)


def test_a_manifest_with_a_non_finite_figure_is_never_written(tmp_path):
    manifest = Manifest.from_dict(_format1()).with_metrics({"kl_to_target": {"size": math.nan}})
    with pytest.raises(eq.EnergyQLError, match="non-finite"):
        manifest.to_json()


def test_a_damaged_flows_file_is_an_artifact_error(tmp_path):
    register_tiny()
    (tmp_path / "manifest.json").write_text((FORMAT1 / "manifest.json").read_text())
    (tmp_path / "flows.safetensors").write_bytes((FORMAT1 / "flows.safetensors").read_bytes()[:100])
    with pytest.raises(ArtifactError, match="flows.safetensors cannot be read"):
        eq.load(tmp_path)


def test_non_finite_flow_weights_are_refused_on_load(tmp_path):
    from safetensors.torch import save_file

    register_tiny()
    tensors = load_file(str(FORMAT1 / "flows.safetensors"))
    name = next(k for k in tensors if k.startswith("stage2.") and tensors[k].is_floating_point())
    tensors[name] = torch.full_like(tensors[name], math.nan)
    save_file(tensors, str(tmp_path / "flows.safetensors"))
    (tmp_path / "manifest.json").write_text((FORMAT1 / "manifest.json").read_text())
    with pytest.raises(ArtifactError, match="non-finite weights"):
        eq.load(tmp_path)


def test_image_counts_round_trip_and_old_manifests_have_none():
    data = _format1()
    assert Manifest.from_dict(data).stages[0].train.images is None  # written before counting
    data["stages"][0]["train"].update(images=4096 + 3 * 8, images_backward=24)
    manifest = Manifest.from_dict(data)
    train = manifest.stages[0].train
    assert (train.images, train.images_backward) == (4120, 24)
    assert "images" not in train.settings  # a count, not a training setting
    assert manifest.to_dict() == data


@pytest.mark.parametrize("text", ['{"a": NaN}', '{"a": Infinity}', '[-Infinity]'])
def test_strict_json_is_read_by_one_helper_that_refuses_non_finite_constants(text):
    from energyql.io import loads_strict

    with pytest.raises(ValueError, match="is not JSON"):
        loads_strict(text)
    assert loads_strict('{"a": [1.5, null]}') == {"a": [1.5, None]}


def test_strict_json_is_written_by_one_helper_that_names_what_held_the_nan():
    from energyql.errors import EnergyQLError
    from energyql.io import dumps_strict

    with pytest.raises(EnergyQLError, match="the checkpoint's log holds a non-finite number"):
        dumps_strict({"loss": math.nan}, what="the checkpoint's log", indent=None)
    assert dumps_strict({"loss": 1.0}, what="x", indent=None) == '{"loss": 1.0}'
