"""A slider run on the explorer page: what the run measured along each slider, requested
against achieved, with the setting nearest the slider marked (issue 24)."""

from __future__ import annotations

import copy
import json
import shutil
import urllib.request

import pytest

from energyql.app.explorer import slider_sweeps
from energyql.metrics import RunMetrics
from tests.app.conftest import SLIDER_METRICS
from tests.app.test_page import open_run, wait_for_grid

pytestmark = pytest.mark.timeout(300)

METRICS = json.loads(SLIDER_METRICS.read_text())
#: A weight slider's sweep as slider_sweep writes it: no requested share, predicate shares
#: (none at weight 0, where the term is dropped), and what a hand-edited file may hold.
HOSTILE = '<img src=x onerror="window.hacked = 1">'
WEIGHT_ROWS = [
    {"value": 0.0, "requested": {}, "judged": {}, "truth": {}, "predicate_share": {},
     "truth_predicate_share": {}, "ess_fraction": 0.91, "kl": 0.01},
    {"value": 1.0, "requested": {}, "judged": {}, "truth": {},
     "predicate_share": {"color == red": 0.62, HOSTILE: 0.5, "all": 0.4},
     "truth_predicate_share": {"color == red": 0.6, HOSTILE: 0.25, "all": 0.38},
     "ess_fraction": float("nan"), "kl": 0.2},
    {"value": "high", "requested": {}, "ess_fraction": 0.1},
    {"value": 2.0, "requested": {}, "judged": {}, "truth": {},
     "predicate_share": {"color == red": 0.81, HOSTILE: 0.75, "all": 0.7},
     "truth_predicate_share": {"color == red": 0.8}, "ess_fraction": 0.33, "kl": 0.5},
]


def weight_metrics() -> dict:
    metrics = copy.deepcopy(METRICS)
    metrics["sliders"] = {"p": WEIGHT_ROWS}
    return metrics


def test_a_dist_sliders_sweep_is_every_row_requested_judged_true_and_ess():
    (sweep,) = slider_sweeps(RunMetrics.from_dict(METRICS))
    assert sweep["name"] == "p" and sweep["cells"] == ["color = blue"]
    assert sweep["predicates"] == []
    rows = METRICS["sliders"]["p"]
    assert [r["value"] for r in sweep["rows"]] == [r["value"] for r in rows]
    assert sweep["rows"][1] == {
        "value": rows[1]["value"], "requested": {"color = blue": 0.3},
        "judged": {"color = blue": 0.152}, "truth": {"color = blue": 0.152},
        "predicate_share": {}, "truth_predicate_share": {}, "ess_fraction": 0.6838}
    assert slider_sweeps(RunMetrics.from_dict({"samples": 10})) == []


def test_a_weight_sliders_sweep_has_predicate_shares_and_only_finite_figures():
    (sweep,) = slider_sweeps(RunMetrics.from_dict(weight_metrics()))
    assert sweep["cells"] == [] and sweep["predicates"] == ["color == red", HOSTILE]
    assert [r["value"] for r in sweep["rows"]] == [0.0, 1.0, 2.0]   # "high" is no setting
    middle = sweep["rows"][1]
    assert middle["predicate_share"] == {"color == red": 0.62, HOSTILE: 0.5}
    assert middle["ess_fraction"] is None                          # NaN: JSON cannot carry it
    assert sweep["rows"][2]["truth_predicate_share"] == {"color == red": 0.8}
    json.dumps(sweep, allow_nan=False)


def info(server, name: str) -> dict:
    request = urllib.request.Request(f"{server.url}/api/run/info", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def test_the_run_info_carries_a_slider_runs_sweep_and_none_for_other_runs(server, slider_run):
    answer = info(server, "slider")
    assert answer["context"] == [{"control": "slider", "name": "p", "low": 0.1, "high": 0.9}]
    (sweep,) = answer["sliders"]
    assert [sweep] == slider_sweeps(RunMetrics.from_dict(METRICS))
    assert [round(r["requested"]["color = blue"], 3) for r in sweep["rows"]] == \
        [0.1, 0.3, 0.5, 0.7, 0.9]
    assert ["slider setting of every figure below", "—", "p=0.5"] in answer["headline"]
    assert info(server, "pose")["sliders"] == []          # a pose run: metrics, no sweep
    assert info(server, "sub/stages")["sliders"] == []


def sweep_table(page, slider: str) -> list[list[str]]:
    return page.evaluate("""(slider) => {
        const panel = [...document.querySelectorAll('#sweeps .sweep')]
            .find((p) => p.dataset.slider === slider);
        return [...panel.querySelectorAll('tr')].map(
            (tr) => [...tr.cells].map((c) => c.textContent));
    }""", slider)


def nearest(page, slider: str = "p") -> str:
    return page.evaluate("""(slider) => {
        const panel = [...document.querySelectorAll('#sweeps .sweep')]
            .find((p) => p.dataset.slider === slider);
        const marked = panel.querySelectorAll('tr.nearest');
        return marked.length === 1 ? marked[0].dataset.value : `${marked.length} rows marked`;
    }""", slider)


def measured(page) -> tuple[str, list[list[str]]]:
    """The heading and table of the figures shown beside the grid."""
    return page.inner_text("#measured h3"), page.evaluate(
        "[...document.querySelectorAll('#measured tr')].map("
        "(tr) => [...tr.cells].map((c) => c.textContent))")


def test_a_slider_run_tables_its_sweep_and_marks_the_setting_nearest_the_slider(page,
                                                                                slider_run):
    open_run(page, "slider")
    table = sweep_table(page, "p")
    assert table[0] == ["p", "requested", "judged", "true", "ESS/N"]
    assert table[1:] == [["0.1", "0.100", "0.150", "0.150", "0.868"],
                         ["0.3", "0.300", "0.152", "0.152", "0.684"],
                         ["0.5", "0.500", "0.152", "0.152", "0.395"],
                         ["0.7", "0.700", "0.152", "0.152", "0.240"],
                         ["0.9", "0.900", "0.152", "0.152", "0.159"]]
    assert "share of color = blue" in page.inner_text("#sweeps")
    # The slider starts at its middle, a measured setting.
    assert nearest(page) == "0.5"
    assert measured(page) == ("measured at p=0.5", [
        ["share of", "requested", "judged", "true"], ["color = blue", "0.500", "0.152", "0.152"],
        ["ESS/N", "0.395"]])
    # Moving the slider moves the mark to the nearest setting, and the grid follows.
    page.locator("#slider-p").fill("0.26")
    wait_for_grid(page, name="slider", context={"p": 0.26})
    assert nearest(page) == "0.3"
    assert measured(page) == ("measured at p=0.3", [
        ["share of", "requested", "judged", "true"], ["color = blue", "0.300", "0.152", "0.152"],
        ["ESS/N", "0.684"]])
    assert "nearest of the 5 measured settings to p=0.260" in page.inner_text("#measured")
    page.locator("#slider-p").fill("0.86")
    assert nearest(page) == "0.9"
    assert measured(page)[0] == "measured at p=0.9"
    # A run without sliders shows neither (opened while the last move's grid may be on its
    # way: the page draws the run opened last).
    open_run(page, "sub/stages")
    assert page.locator("#sweeps .sweep").count() == 0 and page.is_hidden("#measured")


def test_a_weight_slider_shows_its_predicate_shares_and_its_text_stays_text(page, slider_run):
    folder = slider_run.parent / "slider-weight"
    shutil.copytree(slider_run, folder)
    try:
        (folder / "metrics.json").write_text(json.dumps(weight_metrics()))
        page.click("#runs-refresh")  # the page listed the runs before this one was made
        page.wait_for_selector('#run-select option[value="slider-weight"]', state="attached")
        open_run(page, "slider-weight")
        table = sweep_table(page, "p")
        assert table[0] == ["p", "judged share color == red", "true share color == red",
                            f"judged share {HOSTILE}", f"true share {HOSTILE}", "ESS/N"]
        assert table[1] == ["0", "—", "—", "—", "—", "0.910"]
        assert table[2] == ["1", "0.620", "0.600", "0.500", "0.250", "—"]
        assert "(a weight)" in page.inner_text("#sweeps")
        page.locator("#slider-p").fill("0.9")   # the trained range is 0.1..0.9: nearest is 1
        assert nearest(page) == "1"
        assert measured(page) == ("measured at p=1", [
            ["share satisfying", "judged", "true"], ["color == red", "0.620", "0.600"],
            [HOSTILE, "0.500", "0.250"], ["ESS/N", "—"]])
        # Markup in a figure's name is shown as text, never run.
        assert HOSTILE in page.inner_text("#measured") and HOSTILE in page.inner_text("#sweeps")
        assert page.locator("#sweeps img, #measured img").count() == 0
        assert page.evaluate("window.hacked") is None
    finally:
        shutil.rmtree(folder)
