"""The explorer's guards, without a browser: run names stay inside RUNS_DIR, inputs keep the
CLI's limits, errors answer as messages, and the server survives them."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from energyql.app.runs import RunsDir
from energyql.errors import UsageError
from energyql.options import MAX_STEPS


def post(url: str, body, *, raw: bytes | None = None, kind: str = "application/json"):
    """POST JSON; return (status, decoded JSON body)."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": kind})
    return _open(request)


def get(url: str):
    return _open(urllib.request.Request(url))


def _open(request):
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            body = response.read()
            status = response.status
            kind = response.headers.get("content-type", "")
    except urllib.error.HTTPError as error:
        body, status, kind = error.read(), error.code, error.headers.get("content-type", "")
    return status, (json.loads(body) if "json" in kind else body)


# --- RunsDir, directly -------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path, runs_dir):
    """RUNS_DIR with a run, a symlink out of it, a symlink inside it, and a run outside it."""
    root = tmp_path / "runs"
    root.mkdir()
    outside = tmp_path / "secret"
    outside.mkdir()
    (outside / "manifest.json").write_text((runs_dir / "pose" / "manifest.json").read_text())
    (outside / "report.html").write_text("secret")
    (root / "escape").symlink_to(outside, target_is_directory=True)
    (root / "linked").symlink_to(runs_dir / "pose", target_is_directory=True)  # also outside
    inside = root / "real"
    inside.mkdir()
    (inside / "manifest.json").write_text((runs_dir / "pose" / "manifest.json").read_text())
    (inside / "report.html").symlink_to(outside / "report.html")
    (root / "alias").symlink_to(inside, target_is_directory=True)
    return root


@pytest.mark.parametrize("name", ["..", "../secret", "real/../../secret", "/etc", "/etc/passwd",
                                  "C:/Windows", "real/./x", "", "a\x00b", "a\nb", "x" * 300,
                                  "a/b/c/d/e", "~root", "real\\..\\..", ".hidden"])
def test_names_that_leave_or_are_not_names_are_refused(tree, name):
    with pytest.raises(UsageError):
        RunsDir(tree).resolve(name)


def test_symlinks_leading_out_of_the_runs_folder_are_refused_and_not_listed(tree):
    runs = RunsDir(tree)
    for name in ("escape", "linked"):
        with pytest.raises(UsageError, match="leads out of the runs folder"):
            runs.resolve(name)
    listed = {entry.name for entry in runs.list()}
    assert listed == {"real", "alias"}          # the symlink inside is fine
    assert runs.resolve("alias") == (tree / "real").resolve()
    # A run's file that is a symlink out of RUNS_DIR is not handed out either.
    with pytest.raises(UsageError, match="has no report.html"):
        runs.file("real", "report.html")


def test_new_run_names_are_one_new_folder(tree):
    runs = RunsDir(tree)
    assert runs.new_run("fresh") == tree.resolve() / "fresh"
    for taken in ("real", "escape"):
        with pytest.raises(UsageError, match="already exists"):
            runs.new_run(taken)
    with pytest.raises(UsageError, match="has a '/'"):
        runs.new_run("real/inner")
    with pytest.raises(UsageError):
        runs.new_run("../up")


# --- over HTTP ----------------------------------------------------------------------------------

def test_runs_are_listed_by_their_names_under_the_runs_folder(server):
    status, body = get(f"{server.url}/api/runs")
    assert status == 200
    names = {run["name"]: run for run in body["runs"]}
    assert {"pose", "sub/stages"} <= set(names)  # (the page tests add runs of their own)
    assert names["pose"]["context"] == ["x"] and names["sub/stages"]["stages"] == 2


@pytest.mark.parametrize("name", ["../pose", "/etc", "sub/../../x", "nothing-here", 12, None])
def test_traversal_and_unknown_runs_are_refused_with_a_message(server, name):
    for path in ("/api/run/info", "/api/run/draw", "/api/run/compare"):
        status, body = post(server.url + path, {"name": name})
        assert status == 400 and body["error"], (path, body)
    query = urllib.parse.urlencode({"name": str(name), "kind": "html"})
    status, body = get(f"{server.url}/api/run/report?{query}")
    assert status == 400 and body["error"]


def test_oversize_and_out_of_range_inputs_are_refused(server):
    status, body = post(f"{server.url}/api/check", {"expr": "color == red & " * 10_000})
    assert status == 413 and "bytes" in body["error"]
    status, body = post(f"{server.url}/api/check", {"expr": "not color == red & " * 220,
                                                    "gen": "shapes"})
    assert status == 400 and "characters long" in body["error"]
    status, body = post(f"{server.url}/api/run/draw", {"name": "pose", "seed": 2**63})
    assert status == 400 and "seed" in body["error"]
    status, body = post(f"{server.url}/api/run/draw", {"name": "pose", "context": {"x": 5}})
    assert status == 400 and "outside the trained range" in body["error"]
    status, body = post(f"{server.url}/api/run/draw", {"name": "pose", "context": {"x": "nan"}})
    assert status == 400 and "finite" in body["error"]
    status, body = post(f"{server.url}/api/run/draw", {"name": "pose", "sampler": "flow+sir"})
    assert status == 400 and "unconditional" in body["error"]
    status, body = post(f"{server.url}/api/run/compare", {"name": "sub/stages", "stage": 3})
    assert status == 400 and "stage" in body["error"]
    base = {"expr": "color == red", "gen": "shapes", "name": "big"}
    for setting, value, words in (("steps", MAX_STEPS + 1, "steps"), ("batch", 10**9, "batch"),
                                  ("steps", 0, "steps"), ("steps", 1.5, "whole number"),
                                  ("samples", 1, "samples"), ("blocks", 10**6, "blocks")):
        status, body = post(f"{server.url}/api/train", {**base, setting: value})
        assert status == 400 and words in body["error"], (setting, body)
    status, body = post(f"{server.url}/api/train", {**base, "gen": "stylegan2-ffhq"})
    assert status == 400 and "generator the page trains on" in body["error"]
    status, body = post(f"{server.url}/api/train", {**base, "name": "../outside"})
    assert status == 400 and "leaves the runs folder" in body["error"]
    assert not (server.app.state.explorer.runs.root / "big").exists()


def test_malformed_requests_are_messages_and_the_server_survives(server):
    status, body = post(f"{server.url}/api/check", None, raw=b"{not json")
    assert status == 400 and "not JSON" in body["error"]
    status, body = post(f"{server.url}/api/check", {"expr": "x"}, kind="text/plain")
    assert status == 400 and "JSON" in body["error"]
    status, body = post(f"{server.url}/api/check", ["a list"])
    assert status == 400 and "object" in body["error"]
    status, body = post(f"{server.url}/api/run/draw", {"name": "pose", "context": [1, 2]})
    assert status == 400
    status, body = post(f"{server.url}/api/check", {"expr": "color == red", "gen": "shapes"})
    assert status == 200 and body["ok"] and body["canonical"] == "color == red"


def test_a_bug_below_the_api_is_a_500_with_a_message_and_the_server_goes_on(server,
                                                                            monkeypatch, capsys):
    def broken(name):
        raise RuntimeError("a bug")

    monkeypatch.setattr(server.app.state.explorer, "info", broken)
    status, body = post(f"{server.url}/api/run/info", {"name": "pose"})
    assert status == 500 and body["error"].startswith("internal error (RuntimeError)")
    assert "Traceback" not in json.dumps(body) and "a bug" not in body["error"]
    assert "RuntimeError: a bug" in capsys.readouterr().err  # the log has it
    monkeypatch.undo()
    status, body = post(f"{server.url}/api/run/info", {"name": "pose"})
    assert status == 200 and body["context"][0]["name"] == "x"


def test_expression_errors_carry_the_caret_and_hint(server):
    status, body = post(f"{server.url}/api/check", {"expr": "color == rde", "gen": "shapes"})
    assert status == 200 and body["ok"] is False
    assert "unknown value 'rde'" in body["error"] and "^^^" in body["caret"]
    assert "did you mean 'red'" in body["hint"] and body["span"] == [9, 12]


def test_a_damaged_run_is_a_message(server, runs_dir):
    damaged = runs_dir / "damaged"
    damaged.mkdir(exist_ok=True)
    (damaged / "manifest.json").write_text("{ not a manifest")
    try:
        status, body = get(f"{server.url}/api/runs")
        assert {"name": "damaged"}.items() <= next(r for r in body["runs"]
                                                   if r["name"] == "damaged").items()
        status, body = post(f"{server.url}/api/run/draw", {"name": "damaged"})
        assert status == 400 and "manifest.json" in body["error"]
    finally:
        (damaged / "manifest.json").unlink()
        damaged.rmdir()


def test_the_grid_download_and_report_are_attachments(server):
    query = urllib.parse.urlencode({"name": "sub/stages", "seed": 3, "sampler": "flow"})
    status, body = get(f"{server.url}/api/run/grid.png?{query}")
    assert status == 200 and body[:8] == b"\x89PNG\r\n\x1a\n"
    query = urllib.parse.urlencode({"name": "sub/stages", "kind": "md"})
    status, body = get(f"{server.url}/api/run/report?{query}")
    assert status == 200 and b"#" in body


def test_only_loopback_hosts_are_answered_on_loopback(server):
    request = urllib.request.Request(f"{server.url}/api/runs", headers={"Host": "evil.example"})
    status, _ = _open(request)
    assert status == 400


def test_serve_warns_off_loopback_and_refuses_a_file(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import energyql.app
    from energyql.cli import app

    calls = []
    monkeypatch.setattr(energyql.app, "serve", lambda *a, **k: calls.append((a, k)))
    runner = CliRunner()
    result = runner.invoke(app, ["serve", str(tmp_path / "runs"), "--host", "0.0.0.0",
                                 "--port", "8123", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "warning: serving on 0.0.0.0" in result.output
    assert calls and calls[0][1]["host"] == "0.0.0.0" and calls[0][1]["port"] == 8123
    assert (tmp_path / "runs").is_dir()
    result = runner.invoke(app, ["serve", str(tmp_path / "runs"), "--threads", "1"])
    assert result.exit_code == 0 and "warning" not in result.output
    assert calls[-1][1]["host"] == "127.0.0.1"
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["serve", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is a file" in result.output
    result = runner.invoke(app, ["serve", str(tmp_path), "--port", "70000"])
    assert result.exit_code == 2


