"""Fixtures of the explorer page's tests: two tiny trained runs, the server, a headless browser.

The browser is Debian's chromium (``apt-get install -y chromium``) driven by Playwright; the
tests that need it skip with the reason when either is missing. Nothing is downloaded.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("starlette", reason="the explorer needs the app extra: "
                                        'pip install -e ".[app]"')
pytest.importorskip("uvicorn", reason='the explorer needs the app extra: pip install -e ".[app]"')

#: Tiny settings: each fixture training takes a few seconds on one thread.
TINY = dict(steps=3, batch=8, blocks=2, width=16, moment_samples=32, refit_samples=32,
            closeness_samples=32, warm_start_samples=0, threads=1)
POSE = "pose(x in 0.3..0.7) & keep(identity)"
STAGES = "color == red | then uniform(shape)"
SLIDER = "dist(color, blue = p in 0.1..0.9)"
#: A real slider run's metrics (`energyql run SLIDER --gen shapes`): its sweep along p.
SLIDER_METRICS = Path(__file__).resolve().parents[1] / "data" / "metrics" / "shapes-slider.json"


def chromium_path() -> str | None:
    """The chromium binary to drive: $ENERGYQL_CHROMIUM, /usr/bin/chromium, or on the PATH."""
    for candidate in (os.environ.get("ENERGYQL_CHROMIUM"), "/usr/bin/chromium",
                      shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    """A runs folder with a conditional run ('pose') and a two-stage run ('sub/stages')."""
    import energyql as eq

    root = tmp_path_factory.mktemp("runs")
    eq.train(POSE, gen="shapes", out=root / "pose", report=True, samples=32, grid=16,
             progress=False, **TINY)
    eq.train(STAGES, gen="shapes", out=root / "sub" / "stages", report=True, samples=32,
             grid=16, progress=False, **TINY)
    return root


@pytest.fixture(scope="session")
def slider_run(runs_dir) -> Path:
    """A tiny run of SLIDER in ``runs_dir/slider``, with a real slider run's metrics.json
    (trained without the report: the sweep's evaluation would take minutes)."""
    import energyql as eq

    folder = runs_dir / "slider"
    eq.train(SLIDER, gen="shapes", out=folder, report=False, progress=False, **TINY)
    shutil.copyfile(SLIDER_METRICS, folder / "metrics.json")
    return folder


@pytest.fixture(scope="session")
def server(runs_dir):
    """The explorer serving ``runs_dir`` on a free loopback port (in this process)."""
    from energyql.app import start_in_thread

    running = start_in_thread(str(runs_dir), threads=1)
    yield running
    trainings = running.app.state.trainings
    if trainings.status()["state"] == "running":  # a failed test left one going
        trainings.cancel()
    trainings.wait(60)
    running.stop()


@pytest.fixture(scope="session")
def browser():
    """Headless chromium through Playwright (skips with the reason when either is missing)."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed "
                                   '(pip install -e ".[test]")')
    path = chromium_path()
    if path is None:
        pytest.skip("no chromium binary: the browser tests drive Debian's chromium "
                    "(apt-get install -y chromium) or $ENERGYQL_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True,
                                              args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, server):
    """A fresh page on the explorer, loaded and ready; fails on any JavaScript error."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000},
                                  accept_downloads=True)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.set_default_timeout(30_000)
    opened.goto(server.url)
    opened.wait_for_selector('body[data-ready="1"]')
    yield opened
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
