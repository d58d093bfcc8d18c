"""Packaging: one version source, the faces extra, no unused dependencies, LICENSE, cache dir."""

import re
import sys
from pathlib import Path

import pytest
import tomllib

import energyql
from energyql import hub
from energyql.errors import EnergyQLError

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]

# Distribution name -> the module it provides, where they differ.
MODULES = {"open_clip_torch": "open_clip", "pillow": "PIL", "facenet-pytorch": "facenet_pytorch"}


def distribution(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0]


def test_the_version_is_set_in_one_place():
    assert "version" not in PROJECT and "version" in PROJECT["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {
        "attr": "energyql.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+(\S*)", energyql.__version__)
    init = (ROOT / "energyql" / "__init__.py").read_text()
    assert len(re.findall(r"^__version__ = ", init, flags=re.MULTILINE)) == 1


def test_facenet_is_an_extra_that_the_tests_pull_in():
    core = [distribution(r).lower() for r in PROJECT["dependencies"]]
    assert "facenet-pytorch" not in core
    extras = PROJECT["optional-dependencies"]
    assert [distribution(r) for r in extras["faces"]] == ["facenet-pytorch"]
    assert "energyql[faces]" in extras["test"]


def test_every_core_dependency_is_imported_by_the_package():
    sources = "\n".join(p.read_text() for p in (ROOT / "energyql").rglob("*.py"))
    for requirement in PROJECT["dependencies"]:
        name = distribution(requirement)
        module = MODULES.get(name, name)
        pattern = rf"^\s*(import|from) {re.escape(module)}\b"
        assert re.search(pattern, sources, flags=re.MULTILINE), \
            f"{name} is declared but energyql never imports {module}"


def test_license_and_changelog():
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License") and "energyql authors" in license_text
    assert PROJECT["license"] == {"text": "MIT"}
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and "Keep a Changelog" in changelog


@pytest.mark.parametrize("energyql_cache, xdg, expected", [
    (None, None, "HOME/.cache/energyql"),
    (None, "XDG", "XDG/energyql"),
    ("MINE", "XDG", "MINE"),
    (None, "relative/cache", "HOME/.cache/energyql"),  # the XDG spec: ignore relative paths
    (None, "", "HOME/.cache/energyql"),
])
def test_the_cache_honours_xdg_cache_home(monkeypatch, tmp_path, energyql_cache, xdg, expected):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    for name, value in (("ENERGYQL_CACHE", energyql_cache), ("XDG_CACHE_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value if value in ("", "relative/cache")
                               else str(tmp_path / value))
    want = Path(expected.replace("HOME", str(home)).replace("XDG", str(tmp_path / "XDG"))
                .replace("MINE", str(tmp_path / "MINE")))
    assert hub.cache_dir() == want


def test_without_facenet_the_faces_controls_name_the_extra(monkeypatch):
    from energyql.controls import face_pose, faces

    for module in [m for m in sys.modules if m.startswith("facenet_pytorch")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # makes the import fail
    for call in (faces.load_facenet, face_pose.onet_weights_path, face_pose.load_face_pose):
        with pytest.raises(EnergyQLError, match="need facenet-pytorch") as error:
            call()
        assert 'pip install "energyql[faces]"' in error.value.hint
