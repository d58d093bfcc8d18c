"""CLIP tags' weights through huggingface_hub: its cache, our old cache, offline, failed downloads.

Nothing here reaches the network: files are placed in a Hugging Face cache in tmp_path, laid out
as huggingface_hub lays it out, and downloads are replaced by fakes raising the library's errors.
"""

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import errors as hf_errors

from energyql.controls.clip import load_clip, pretrained_path
from energyql.errors import WeightsMissingError
from tests.controls.helpers import put_in_hf_cache

REPO = "timm/vit_base_patch32_clip_224.openai"  # ViT-B-32:openai
SAFE, PICKLED = "open_clip_model.safetensors", "open_clip_pytorch_model.bin"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_network(monkeypatch):
    """Record (and refuse) every attempt to resolve a host name or open a connection."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("the network is off in this test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


@pytest.fixture
def calls(monkeypatch):
    """Record every hf_hub_download call (its file name), then make it."""
    import huggingface_hub

    made, real = [], huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kwargs):
        made.append(filename)
        return real(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    return made


@pytest.fixture
def online(tmp_path, monkeypatch, hf_cache):
    """An empty energyql cache with downloads allowed (and an empty Hugging Face cache)."""
    monkeypatch.setenv("ENERGYQL_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ENERGYQL_OFFLINE", raising=False)
    return tmp_path / "cache"


@pytest.mark.parametrize("offline", [True, False])
def test_a_file_in_the_hugging_face_cache_is_used_without_the_network(online, hf_cache, no_network,
                                                                      calls, monkeypatch, offline):
    if offline:
        monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    # Only the pickled file is cached: it is used, online too, before anything is fetched.
    cached = put_in_hf_cache(hf_cache, REPO, PICKLED, b"weights")
    assert pretrained_path("ViT-B-32", "openai") == cached
    assert calls == [] and no_network == []  # nothing was asked of the hub
    # Both cached: the safetensors file is preferred.
    safe = put_in_hf_cache(hf_cache, REPO, SAFE, b"safe weights")
    assert pretrained_path("ViT-B-32", "openai") == safe
    assert no_network == [] and not online.exists()


def test_a_tag_loads_from_the_hugging_face_cache_offline(offline_cache, hf_cache, tiny_clip,
                                                         no_network, monkeypatch):
    name, checkpoint, _ = tiny_clip
    cfg = {"hf_hub": "someone/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    monkeypatch.setattr("open_clip.get_pretrained_cfg",
                        lambda n, t: cfg if (n, t) == (name, "hubtag") else {})
    put_in_hf_cache(hf_cache, "someone/tiny-clip", SAFE, checkpoint.read_bytes())
    model = load_clip(f"{name}:hubtag")
    assert model.image_size == 32 and model.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert no_network == [] and not offline_cache.exists()


@pytest.mark.parametrize("switch, name", [("ENERGYQL_OFFLINE", "ENERGYQL_OFFLINE"),
                                          ("constants", "HF_HUB_OFFLINE")])
def test_offline_with_nothing_cached_names_repo_file_and_command(online, hf_cache, calls,
                                                                 no_network, monkeypatch, switch,
                                                                 name):
    if switch == "constants":  # HF_HUB_OFFLINE=1 as huggingface_hub read it at import
        monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    else:
        monkeypatch.setenv("ENERGYQL_OFFLINE", "1")
    with pytest.raises(WeightsMissingError) as caught:
        pretrained_path("ViT-B-32", "openai")
    error = caught.value
    assert f"({SAFE} of {REPO}) are not in the Hugging Face cache {hf_cache}" in error.message
    assert error.message.endswith(f"downloads are off ({name})")
    assert f"hf download {REPO} {SAFE} --cache-dir {hf_cache}" in error.hint
    assert f"name {PICKLED} instead" not in error.hint and f"name {PICKLED};" in error.hint
    assert calls == [] and no_network == []  # the cache was only read
    assert not online.exists() and not hf_cache.exists()


def _http_error(cls, status):
    request = httpx2.Request("HEAD", f"https://huggingface.co/{REPO}/resolve/main/{SAFE}")
    response = httpx2.Response(status, request=request)
    return cls(f"{status} Client Error.\nRequest ID: x", response=response)


def _unreachable():
    error = hf_errors.LocalEntryNotFoundError("An error happened while trying to locate the file")
    error.__cause__ = httpx2.ConnectError("[Errno -2] Name or service not known")
    return error


@pytest.mark.parametrize("failure, reason", [
    (_unreachable, "the hub could not be reached ([Errno -2] Name or service not known)"),
    (lambda: _http_error(hf_errors.RepositoryNotFoundError, 401), f"no repository '{REPO}'"),
    (lambda: _http_error(hf_errors.GatedRepoError, 403), "'hf auth login'"),
    (lambda: _http_error(hf_errors.HfHubHTTPError, 503), "503 Client Error."),
    (lambda: OSError("No space left on device"), "OSError: No space left on device"),
    (lambda: httpx2.ProxyError("proxy refused"), "ProxyError: proxy refused"),
    (lambda: _http_error(hf_errors.RemoteEntryNotFoundError, 404),
     f"the repository has none of {SAFE}, {PICKLED}"),
])
def test_a_failed_download_is_one_clear_error_and_leaves_nothing(online, hf_cache, monkeypatch,
                                                                 failure, reason):
    import huggingface_hub

    asked = []

    def fails(repo_id, filename):
        asked.append(filename)
        raise failure()

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fails)
    with pytest.raises(WeightsMissingError) as caught:
        pretrained_path("ViT-B-32", "openai")
    error = caught.value
    assert "could not be downloaded: " in error.message and reason in error.message
    assert "downloads are off" not in error.message
    assert f"hf download {REPO} {SAFE}" in error.hint
    # Only a file the repository lacks sends us on to the next one.
    assert asked == ([SAFE, PICKLED] if "none of" in reason else [SAFE])
    assert not online.exists() and not hf_cache.exists()


def test_the_safetensors_file_is_preferred_and_the_pickled_one_is_the_fallback(online, monkeypatch):
    import huggingface_hub

    asked = []

    def hub(repo_id, filename):
        asked.append(filename)
        if filename == SAFE:
            raise _http_error(hf_errors.RemoteEntryNotFoundError, 404)
        return f"/hub/{filename}"

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub)
    assert pretrained_path("ViT-B-32", "openai") == Path(f"/hub/{PICKLED}")
    assert asked == [SAFE, PICKLED]


@pytest.mark.parametrize("old_name", [PICKLED, "ViT-B-32.pt"])
def test_a_file_in_the_old_energyql_cache_is_still_preferred(online, hf_cache, calls, no_network,
                                                             old_name):
    old = online / "clip" / "ViT-B-32" / "openai" / old_name  # where earlier releases put it
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old weights")
    put_in_hf_cache(hf_cache, REPO, SAFE, b"newer weights")
    assert pretrained_path("ViT-B-32", "openai") == old
    assert calls == [] and no_network == []  # not even the Hugging Face cache was asked


def test_hugging_face_variables_are_honoured_in_a_fresh_process(tmp_path):
    """HF_HOME and HF_HUB_OFFLINE as users set them: before huggingface_hub is imported."""
    home = tmp_path / "hf-home"
    cached = put_in_hf_cache(home / "hub", REPO, SAFE, b"weights")
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "ENERGYQL_OFFLINE",
                        "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(home), HF_HUB_OFFLINE="1", ENERGYQL_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    script = textwrap.dedent("""
        from energyql.controls.clip import pretrained_path
        from energyql.errors import WeightsMissingError
        print(pretrained_path("ViT-B-32", "openai"))
        try:
            pretrained_path("ViT-B-16", "openai")
        except WeightsMissingError as error:
            print(error.message)
    """)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    found, missing = result.stdout.splitlines()
    assert found == str(cached)
    assert f"Hugging Face cache {home / 'hub'}" in missing and missing.endswith("(HF_HUB_OFFLINE)")
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("earlier", [False, True])
def test_hf_hub_models_and_tokenizers_go_to_the_hugging_face_cache(online, tiny_clip, monkeypatch,
                                                                   earlier):
    import open_clip

    _, _, folder = tiny_clip
    repo = f"someone/tiny-clip-{earlier}"  # one spec per case: loaded models are cached by spec
    if earlier:  # an earlier release fetched it into energyql's CLIP folder: it stays there
        (online / "clip" / f"models--{repo.replace('/', '--')}").mkdir(parents=True)
    caches = {}
    create_model, get_tokenizer = open_clip.create_model, open_clip.get_tokenizer

    def create(spec, *, device, cache_dir, **options):
        caches["model"] = cache_dir
        return create_model(f"local-dir:{folder}", device=device, **options)

    def tokenizer(spec, *, cache_dir):
        caches["tokenizer"] = cache_dir
        return get_tokenizer(f"local-dir:{folder}")

    monkeypatch.setattr(open_clip, "create_model", create)
    monkeypatch.setattr(open_clip, "get_tokenizer", tokenizer)
    assert load_clip(f"hf-hub:{repo}").image_size == 32
    expected = str(online / "clip") if earlier else None  # None: huggingface_hub's own cache
    assert caches == {"model": expected, "tokenizer": expected}
