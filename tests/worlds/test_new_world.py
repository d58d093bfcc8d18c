"""A third world written only in its own package plugs in through one registered World record.

The test writes a toy world into a temporary package (a renderer-generator of coloured 8x8
tiles and a judge with random weights), imports it, and checks that every central table reads
it: ``energyql gens`` lists it, ``energyql check`` resolves its names, ``energyql run`` trains
on it, and ``energyql eval --frechet`` measures it in its judge's feature space. Nothing
central names it.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from typer.testing import CliRunner

import energyql.cli.gens  # noqa: F401  (registers the command)
from energyql import worlds
from energyql.catalog import CATALOGS, Attribute, Catalog
from energyql.cli import app
from energyql.controls import registry as controls
from energyql.errors import EnergyQLError
from energyql.generators import registry as generators
from energyql.worlds import World, register_world

runner = CliRunner()
PACKAGE = "energyql_toy_world"

INIT = '''
"""The toy world's record (no torch)."""
from energyql.catalog import Attribute, Catalog
from energyql.controls.registry import model
from energyql.generators.registry import GeneratorSpec
from energyql.worlds import World, register_world

CATALOG = Catalog(
    name="toy", description="coloured 8x8 tiles",
    attributes=(Attribute("tint", ("red", "green", "blue"), "toy-judge"),))
WORLD = register_world(World(
    catalog=CATALOG, package=__name__,
    generators=(GeneratorSpec("toy", "toy", f"{__name__}.generator:load", "toy tiles",
                              resolution=8, training=(("steps", 2), ("batch", 8)),
                              inherit_training=False),),
    controls=(model("toy-judge", f"{__name__}.judge:load_attributes", kind="attributes"),),
    features=f"{__name__}.judge:features",
    weights=("judge.safetensors",)))
'''

GENERATOR = '''
"""A renderer that is its own generator: a latent's first three entries tint the tile."""
import torch

from energyql.generators.base import Generator


class ToyGenerator(Generator):
    id = "toy"
    catalog = "toy"
    image_size = 8
    latent_dim = 4

    def __init__(self):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))

    def decode(self, z, context=None):
        colour = torch.sigmoid(2 * z[:, :3])
        return colour[:, :, None, None].expand(-1, 3, 8, 8) + 0 * self.anchor


def load(spec=None, *, device="cpu", **options):
    return ToyGenerator().to(device)
'''

JUDGE = '''
"""A judge with random weights (a file of the world's weights folder)."""
from pathlib import Path

import torch
from torch import nn

from energyql.worlds import read_safetensors

WEIGHTS = Path(__file__).parent / "weights" / "judge.safetensors"


class Judge(nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = nn.Linear(3, 6)
        self.head = nn.Linear(6, 3)

    def embed(self, images):
        return torch.tanh(self.embedding(images.mean(dim=(2, 3))))

    def forward(self, images):
        return {"tint": self.head(self.embed(images))}


def load(device="cpu"):
    state, _ = read_safetensors(WEIGHTS)
    judge = Judge()
    judge.load_state_dict(state)
    return judge.eval().requires_grad_(False).to(device)


def load_attributes(catalog, *, device="cpu"):
    from energyql.controls.attributes import ClassifierAttributes

    return ClassifierAttributes(load(device), catalog).to(device)


def features(images01):
    with torch.no_grad():
        return load(images01.device).embed(images01)
'''


def _write_world(root):
    package = root / PACKAGE
    (package / "weights").mkdir(parents=True)
    for name, text in (("__init__.py", INIT), ("generator.py", GENERATOR), ("judge.py", JUDGE)):
        (package / name).write_text(textwrap.dedent(text))
    return package


@pytest.fixture
def toy_world(tmp_path, monkeypatch):
    """The toy world, imported from a temporary package (unregistered again afterwards)."""
    package = _write_world(tmp_path)
    torch.manual_seed(0)
    judge = torch.nn.ModuleDict({"embedding": torch.nn.Linear(3, 6), "head": torch.nn.Linear(6, 3)})
    worlds.write_safetensors(package / "weights" / "judge.safetensors",
                             {k: v.contiguous() for k, v in judge.state_dict().items()})
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(worlds, "_WORLDS", worlds.registered())
    monkeypatch.delitem(sys.modules, PACKAGE, raising=False)
    for name in ("generator", "judge"):
        monkeypatch.delitem(sys.modules, f"{PACKAGE}.{name}", raising=False)
    __import__(PACKAGE)
    yield package
    for name in [m for m in sys.modules if m.startswith(PACKAGE)]:
        del sys.modules[name]


def test_a_world_in_its_own_package_is_read_by_every_central_table(toy_world):
    assert CATALOGS["toy"].attribute("tint") is not None
    assert generators.resolve("toy").loader == f"{PACKAGE}.generator:load"
    assert generators.resolve("toy").training_defaults() == {"steps": 2, "batch": 8}
    assert controls.resolve("toy-judge", kind="attributes").loader.startswith(PACKAGE)
    from energyql.frechet import world_feature_worlds

    assert "toy" in world_feature_worlds()


def test_gens_lists_the_new_world_and_its_weights(toy_world):
    result = runner.invoke(app, ["gens", "--paths"], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if line.startswith("│ toy "))
    assert "ready" in row and "toy tiles" in row
    assert str(toy_world / "weights") in result.output
    (toy_world / "weights" / "judge.safetensors").unlink()
    result = runner.invoke(app, ["gens"], env={"COLUMNS": "300"})
    row = next(line for line in result.output.splitlines() if line.startswith("│ toy "))
    assert "missing" in row


def test_check_resolves_the_new_worlds_names(toy_world):
    result = runner.invoke(app, ["check", "tint == red & uniform(tint)", "--gen", "toy", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["catalog"] == "toy"
    result = runner.invoke(app, ["check", "tnt == red", "--gen", "toy"])
    assert result.exit_code == 2 and "did you mean 'tint'" in result.output


def test_the_new_world_trains_and_evaluates_with_its_frechet_distance(toy_world, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", "tint == red", "--gen", "toy", "--out", str(out),
                                 "--steps", "2", "--batch", "8", "--samples", "16",
                                 "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["attributes"]["tint"]) == {"red", "green", "blue"}
    assert metrics["frechet"]["feature_dim"] == 6  # the toy judge's features
    result = runner.invoke(app, ["eval", str(out), "--samples", "16", "--frechet", "--json",
                                 "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    frechet = json.loads(result.stdout)["frechet"]
    assert frechet["samples"] == 16 and frechet["frechet"] >= 0


def test_a_broken_record_fails_when_registered():
    catalog = Catalog(name="broken", attributes=(Attribute("a", ("x", "y"), "no-such-judge"),))
    with pytest.raises(EnergyQLError, match="names the attributes model 'no-such-judge'"):
        register_world(World(catalog=catalog, package="energyql.worlds.shapes"))
    with pytest.raises(EnergyQLError, match="name of a built-in catalog"):
        register_world(World(catalog=Catalog(name="faces", attributes=()), package="x"))
    assert "broken" not in worlds.registered()


def test_no_central_module_names_a_world():
    # The grep, less docstring examples ("e.g.", ">>>"): only the default generator.
    found = subprocess.run(
        ["grep", "-rn", "--include=*.py",
         r'"shapes"\|"portraits"\|worlds\.shapes\|worlds\.portraits',
         "energyql/catalog.py", "energyql/frechet.py", "energyql/workflow.py", "energyql/api.py",
         "energyql/cli", "energyql/controls", "energyql/generators", "energyql/energies"],
        capture_output=True, text=True, cwd=_root()).stdout.splitlines()
    naming = [line for line in found if "e.g." not in line and ">>>" not in line]
    assert [line.split(":")[0] for line in naming] == ["energyql/generators/registry.py"], naming
    assert "DEFAULT_GENERATOR = " in naming[0]


def test_discovering_the_worlds_imports_no_torch():
    code = ("import sys, energyql.catalog as c, energyql.generators.registry as g; "
            "c.CATALOGS['portraits']; g.resolve('shapes'); sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _root():
    from pathlib import Path

    import energyql

    return Path(energyql.__file__).parent.parent
