"""The explorer page in headless chromium: check as you type, explore runs with sliders (the
grid equals `energyql sample`'s), compare stages, train and cancel, refuse bad input."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from energyql.cli import app as cli

pytestmark = pytest.mark.timeout(300)


def pixels_of_data_url(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def cli_grid(run, tmp_path, *options: str) -> np.ndarray:
    """The grid `energyql sample RUN -n 16 ...` writes, decoded."""
    out = tmp_path / f"cli-{len(list(tmp_path.iterdir()))}.png"
    result = CliRunner().invoke(cli, ["sample", str(run), "-n", "16", "--out", str(out),
                                      "--threads", "1", "--no-progress", *options])
    assert result.exit_code == 0, result.output
    return np.asarray(Image.open(out).convert("RGB"))


def wait_for_grid(page, **expected) -> dict:
    """Wait until the grid shows a drawing whose request has ``expected`` fields; return it."""
    page.wait_for_function(
        """(expected) => {
            const key = document.getElementById('grid').dataset.key;
            if (!key) return false;
            const asked = JSON.parse(key);
            return Object.entries(expected).every(
                ([k, v]) => JSON.stringify(asked[k]) === JSON.stringify(v));
        }""", arg=expected)
    return json.loads(page.get_attribute("#grid", "data-key"))


def open_run(page, name: str) -> None:
    page.select_option("#run-select", name)
    wait_for_grid(page, name=name)


def test_a_broken_expression_shows_the_caret_message_as_you_type(page):
    page.fill("#expr", "color == red & shape == circl")
    page.wait_for_selector("#check-error:not([hidden])")
    assert "unknown value 'circl' of 'shape'" in page.inner_text("#check-message")
    caret = page.inner_text("#check-caret")
    assert "shape == circl" in caret and "^^^^^" in caret
    assert "did you mean 'circle'" in page.inner_text("#check-hint")
    # Fixed: the error goes and the resolved graph shows, in words.
    page.fill("#expr", "color == red & shape == circle")
    page.wait_for_function("document.getElementById('check-error').hidden")
    tree = page.inner_text("#check-tree")
    assert "predicate color == red" in tree and "stage 1" in tree
    # A syntax error, and a name checked against another generator's catalog.
    page.fill("#expr", "color == red &")
    page.wait_for_selector("#check-error:not([hidden])")
    assert "^" in page.inner_text("#check-caret")
    page.fill("#expr", "uniform(race x age)")
    page.select_option("#gen", "stylegan2-ffhq")
    page.wait_for_function("document.getElementById('check-status').textContent.includes('✓')")
    page.select_option("#gen", "shapes")
    page.wait_for_selector("#check-error:not([hidden])")
    assert "race" in page.inner_text("#check-message")


def test_moving_a_pose_slider_redraws_the_grid_as_energyql_sample_draws_it(page, runs_dir,
                                                                            tmp_path):
    open_run(page, "pose")
    assert page.locator("#sliders input[type=range]").count() == 1
    assert "pose error of x" in page.inner_text("#headline")
    page.fill("#seed", "7")
    wait_for_grid(page, seed="7", context={"x": 0.5})
    before = pixels_of_data_url(page.get_attribute("#grid", "src"))
    page.locator("#slider-x").fill("0.62")
    wait_for_grid(page, seed="7", context={"x": 0.62})
    after = pixels_of_data_url(page.get_attribute("#grid", "src"))
    assert after.shape == before.shape and not np.array_equal(after, before)
    assert np.array_equal(after, cli_grid(runs_dir / "pose", tmp_path, "--set", "x=0.62",
                                          "--seed", "7"))
    assert np.array_equal(before, cli_grid(runs_dir / "pose", tmp_path, "--set", "x=0.5",
                                           "--seed", "7"))
    # The judged histograms follow the slider: the requested value is the marked bin.
    assert "requested 0.620" in page.inner_text("#histograms")
    assert "shape (judged)" in page.inner_text("#histograms")
    # The download is the same grid.
    with page.expect_download() as download:
        page.click("#download-grid")
    saved = tmp_path / "download.png"
    download.value.save_as(saved)
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), after)


def test_an_unconditional_run_its_samplers_and_its_stages_side_by_side(page, runs_dir, tmp_path):
    open_run(page, "sub/stages")
    assert page.locator("#sliders input").count() == 0
    assert [o.strip() for o in page.locator("#sampler option").all_inner_texts()] == \
        ["flow", "flow+sir"]
    page.fill("#seed", "3")
    wait_for_grid(page, seed="3", sampler="flow")
    flow = pixels_of_data_url(page.get_attribute("#grid", "src"))
    assert np.array_equal(flow, cli_grid(runs_dir / "sub" / "stages", tmp_path, "--seed", "3"))
    page.select_option("#sampler", "flow+sir")
    wait_for_grid(page, seed="3", sampler="flow+sir")
    assert "ESS" in page.inner_text("#draw-time")
    # Compare: base, stage 1 and stage 2 (the last) on the same noise.
    page.wait_for_function("document.querySelectorAll('#compare-panels figure').length === 3")
    labels = page.locator("#compare-panels figcaption").all_inner_texts()
    assert labels == ["base", "stage 1", "stage 2 (last)"]
    sources = [page.get_attribute(f"#compare-panels figure:nth-child({i}) img", "src")
               for i in (1, 2, 3)]
    panels = [pixels_of_data_url(s) for s in sources]
    assert not np.array_equal(panels[0], panels[2])
    last = pixels_of_data_url(sources[2])
    page.select_option("#sampler", "flow")
    wait_for_grid(page, seed="3", sampler="flow")
    assert np.array_equal(last, pixels_of_data_url(page.get_attribute("#grid", "src")))
    # The report downloads.
    with page.expect_download() as download:
        page.click("#download-report")
    assert download.value.suggested_filename.endswith("report.html")


def test_bad_input_on_the_page_is_a_message_and_the_page_goes_on(page):
    open_run(page, "pose")
    page.fill("#seed", "99999999999999999999")
    page.wait_for_selector("#draw-error:not([hidden])")
    assert "seed must be from 0" in page.inner_text("#draw-error")
    page.fill("#seed", "1")
    wait_for_grid(page, seed="1")
    page.wait_for_function("document.getElementById('draw-error').hidden")
    # A run name that leaves the folder, sent by hand from the page.
    answer = page.evaluate("""async () => {
        const r = await fetch('/api/run/info', {method: 'POST',
            headers: {'Content-Type': 'application/json'}, body: JSON.stringify({name: '../x'})});
        return [r.status, await r.json()];
    }""")
    assert answer[0] == 400 and "leaves the runs folder" in answer[1]["error"]


# A small start pool too: the shapes default (8,192 images judged 16 at a time at batch 4)
# kept the first step past the page's 30-second wait on a loaded 2-core machine.
TINY_PAGE = {"blocks": 2, "width": 16, "moment_samples": 32, "refit_samples": 32,
             "closeness_samples": 32, "refit_every": 0, "warm_start_samples": 256}


def test_start_cancel_and_finish_trainings_from_the_page(page, runs_dir):
    page.evaluate(f"window.energyqlTrainExtra = {json.dumps(TINY_PAGE)}")
    page.fill("#expr", "color == red")
    page.fill("#train-name", "long")
    page.fill("#train-steps", "100000")
    page.fill("#train-batch", "4")
    page.uncheck("#train-report")
    page.click("#train-start")
    page.wait_for_function("/step [1-9]/.test(document.getElementById('train-state').textContent)")
    assert page.is_enabled("#train-cancel") and not page.is_enabled("#train-start")
    # One training at a time: a second one is refused with a message.
    answer = page.evaluate("""async () => {
        const r = await fetch('/api/train', {method: 'POST',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({expr: 'color == red', gen: 'shapes', name: 'second'})});
        return [r.status, await r.json()];
    }""")
    assert answer[0] == 400 and "already running ('long')" in answer[1]["error"]
    page.wait_for_function("document.getElementById('train-figures').textContent.includes('loss')")
    page.click("#train-cancel")
    page.wait_for_selector('#train-state[data-state="cancelled"]')
    assert "cancelled at step" in page.inner_text("#train-phase")
    assert not (runs_dir / "long").exists() and not (runs_dir / "second").exists()
    # A short one runs to the end and opens in the explorer.
    page.fill("#train-name", "short")
    page.fill("#train-steps", "3")
    page.click("#train-start")
    page.wait_for_selector('#train-state[data-state="finished"]')
    wait_for_grid(page, name="short")
    assert (runs_dir / "short" / "manifest.json").is_file()
    assert page.input_value("#run-select") == "short"
