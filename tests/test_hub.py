"""The weights hub: cache directory, checked atomic downloads, clear offline errors.

Downloads use only file:// URLs and an HTTP server on 127.0.0.1.
"""

import hashlib
import http.server
import re
import socket
import threading

import pytest

from energyql import hub
from energyql.errors import WeightsMissingError
from energyql.generators import registry

PAYLOAD = b"PK\x03\x04" + bytes(range(256)) * 64  # starts like a torch.save zip archive


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("ENERGYQL_CACHE", str(folder))
    monkeypatch.delenv("ENERGYQL_OFFLINE", raising=False)
    return folder


@pytest.fixture
def entry(tmp_path, monkeypatch):
    """Register a test entry served from a local file; returns a function to re-register it."""
    source = tmp_path / "source.pt"
    source.write_bytes(PAYLOAD)

    def make(url=source.as_uri(), sha256=hashlib.sha256(PAYLOAD).hexdigest()):
        weights = hub.Weights("test-weights", "test.pt", url, sha256, "a test file")
        monkeypatch.setitem(hub.KNOWN, "test-weights", weights)
        return weights

    make()
    return make


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 with a few misbehaving routes."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/ok.pt":
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD)
            elif self.path == "/truncated.pt":  # promises more bytes than it sends
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                self.wfile.write(PAYLOAD[:1000])
                self.wfile.flush()
                self.close_connection = True
            elif self.path == "/page.pt":  # what a moved sharing link returns
                body = b"<!DOCTYPE html><html>moved</html>"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cache_dir_default_and_override(tmp_path, monkeypatch):
    monkeypatch.delenv("ENERGYQL_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.cache_dir() == tmp_path / ".cache" / "energyql"
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path / "elsewhere"))
    assert hub.cache_dir() == tmp_path / "elsewhere"
    assert hub.location("stylegan2-ffhq") == tmp_path / "elsewhere" / "ffhq.pt"


def test_table_covers_the_registry():
    for spec in registry.specs():
        if spec.weights is not None and spec.weights.startswith("hf:"):  # Hub pipeline folders
            assert re.fullmatch(r"hf:[\w.-]+/[\w.-]+", spec.weights), spec.name
        elif spec.weights is not None:
            assert spec.weights in hub.KNOWN, spec.name
    for key in ("facenet-vggface2", "facenet-casia", "fairface-res34"):
        assert key in hub.KNOWN
    for weights in hub.KNOWN.values():
        assert weights.filename and weights.url and weights.url.startswith("https://")
        # A digest is either a real sha256 or absent (never a placeholder).
        assert weights.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", weights.sha256)


def test_download_from_file_url_with_digest(cache, entry, tmp_path):
    path = hub.path("test-weights", progress=True)
    assert path == cache / "test.pt" and path.read_bytes() == PAYLOAD
    assert hub.is_present("test-weights")
    (tmp_path / "source.pt").unlink()  # a present file is not downloaded again
    assert hub.path("test-weights") == path
    assert leftovers(cache) == ["test.pt"]
    assert hub.file_digest(path) == hashlib.sha256(PAYLOAD).hexdigest()


def test_download_over_local_http(cache, entry, server):
    entry(url=server + "/ok.pt")
    assert hub.path("test-weights", progress=False).read_bytes() == PAYLOAD


def test_wrong_digest_leaves_nothing(cache, entry):
    entry(sha256="0" * 64)
    with pytest.raises(hub.DigestMismatchError, match="sha256") as info:
        hub.path("test-weights", progress=False)
    assert isinstance(info.value, WeightsMissingError)
    assert leftovers(cache) == []


def test_interrupted_download_leaves_nothing(cache, entry, server):
    entry(url=server + "/truncated.pt", sha256=None)
    with pytest.raises(WeightsMissingError, match="broke off"):
        hub.path("test-weights", progress=False)
    assert leftovers(cache) == []


def test_html_instead_of_a_checkpoint_is_rejected(cache, entry, server):
    entry(url=server + "/page.pt", sha256=None)
    with pytest.raises(WeightsMissingError, match="did not return a PyTorch checkpoint"):
        hub.path("test-weights", progress=False)
    assert leftovers(cache) == []


def test_unreachable_server_names_file_location_and_command(cache, entry):
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    entry(url=f"http://127.0.0.1:{port}/x.pt")
    with pytest.raises(WeightsMissingError) as info:
        hub.path("test-weights", progress=False)
    text = str(info.value)
    assert "test.pt" in text and str(cache / "test.pt") in text
    assert "curl -L -o" in text and f"127.0.0.1:{port}" in text
    assert leftovers(cache) == []


@pytest.mark.parametrize("how", ["offline", "no-download"])
def test_offline_error(cache, entry, monkeypatch, how):
    if how == "offline":
        monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
        call = lambda: hub.path("test-weights")  # noqa: E731
    else:
        call = lambda: hub.path("test-weights", download=False)  # noqa: E731
    with pytest.raises(WeightsMissingError) as info:
        call()
    assert str(cache / "test.pt") in str(info.value)
    assert "hint: get them with:" in str(info.value)
    assert not cache.exists() or leftovers(cache) == []


def test_known_weights_offline_name_their_url(cache, monkeypatch):
    monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as info:
        hub.path("stylegan2-ffhq")
    assert "ffhq.pt" in str(info.value) and "dropbox.com" in str(info.value)


def test_unknown_key_suggests_a_name():
    with pytest.raises(WeightsMissingError, match="did you mean 'stylegan2-ffhq'"):
        hub.path("stylegan2-ffhg")
