"""Without diffusers, diffusion generators fail with the extra that installs it."""

import sys

import pytest

from energyql.errors import EnergyQLError
from energyql.generators import resolve


def test_missing_diffusers_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` fail
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(EnergyQLError) as info:
        resolve(f"diffusers:{tmp_path}").load()
    assert "'diffusers' package" in info.value.message
    assert "pip install 'energyql[diffusion]'" in info.value.hint
