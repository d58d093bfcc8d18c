"""Hub pipeline folders: location, presence, fetch command, and a failed download."""

import sys
import types

import pytest

from energyql.errors import WeightsMissingError
from energyql.generators import hf_folders


def test_location_presence_and_command(tmp_path, monkeypatch):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    folder = tmp_path / "hf" / "google--ddpm-church-256"
    assert hf_folders.location("hf:google/ddpm-church-256") == folder
    assert not hf_folders.is_present("hf:google/ddpm-church-256")
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    assert hf_folders.is_present("hf:google/ddpm-church-256")
    assert hf_folders.fetch("hf:google/ddpm-church-256") == folder  # present: no download
    assert hf_folders.fetch_command("hf:a/b") == f"hf download a/b --local-dir {tmp_path}/hf/a--b"


def _proxy_error():
    import httpx2  # huggingface_hub 2.x's HTTP client: its errors are not OSErrors

    return httpx2.ProxyError("proxy refused")


@pytest.mark.parametrize("error, name", [(lambda: OSError("network is unreachable"), "OSError"),
                                         (_proxy_error, "ProxyError")])
def test_a_failed_download_names_folder_and_command(tmp_path, monkeypatch, error, name):
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path))
    monkeypatch.delenv("ENERGYQL_OFFLINE", raising=False)

    def unreachable(repo_id, local_dir):
        raise error()

    monkeypatch.setitem(sys.modules, "huggingface_hub",
                        types.SimpleNamespace(snapshot_download=unreachable))
    with pytest.raises(WeightsMissingError) as info:
        hf_folders.fetch("hf:google/ddpm-cifar10-32")
    assert f"could not be downloaded ({name})" in info.value.message
    assert "hf download google/ddpm-cifar10-32" in info.value.hint
