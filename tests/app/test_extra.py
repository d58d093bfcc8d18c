"""The explorer is an optional extra that the tests pull in, and says how to install it."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

from energyql.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_app_extra_is_starlette_and_uvicorn_and_the_tests_include_it():
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert sorted(r.split(">")[0] for r in extras["app"]) == ["starlette", "uvicorn"]
    assert "energyql[app]" in extras["test"]
    assert any(r.startswith("playwright") for r in extras["test"])
    core = " ".join(PYPROJECT["project"]["dependencies"])
    assert "starlette" not in core and "uvicorn" not in core
    assert "app/static/*" in PYPROJECT["tool"]["setuptools"]["package-data"]["energyql"]
    static = ROOT / "energyql" / "app" / "static"
    assert {p.name for p in static.iterdir()} >= {"index.html", "app.js", "style.css"}


def test_without_the_extra_serve_names_the_install_command(monkeypatch, tmp_path):
    import importlib.util

    from typer.testing import CliRunner

    import energyql.app
    from energyql.cli import app

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "uvicorn" else real(name, *a))
    with pytest.raises(UsageError) as caught:
        energyql.app.require()
    assert "uvicorn" in caught.value.message and energyql.app.INSTALL in caught.value.hint
    result = CliRunner().invoke(app, ["serve", str(tmp_path)])
    assert result.exit_code == 2 and 'pip install "energyql[app]"' in result.output
