"""energyql.metrics: the typed, read-only view of a run's evaluation figures (metrics.json)."""

import json
from pathlib import Path

import pytest

from energyql.io import dumps_strict
from energyql.metrics import Closeness, Frechet, RunMetrics, SliderRow, Truth, TruthDrift

DATA = Path(__file__).parent / "data" / "metrics"
# What `energyql run` wrote for these expressions on the shapes world (5 steps, 2000 samples).
RUN = DATA / "shapes-run.json"        # color == red & dist(size, small=0.7)
SLIDER = DATA / "shapes-slider.json"  # dist(color, blue = p in 0.1..0.9)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_a_real_run_reads_every_section_by_name():
    figures = RunMetrics.from_dict(load(RUN))
    assert figures.samples == 2000
    assert figures.attributes["color"] == {"red": 0.696, "green": 0.239, "blue": 0.065}
    assert figures.joint["color x size"]["red,small"] == 0.233
    target = "dist(size, small=0.7, large=0.3)"
    assert figures.kl_to_target == {target: 0.27941}
    assert figures.tv_to_target == {target: 0.363}
    assert figures.kl_to_uniform["size"] == 0.05412
    assert figures.predicate_share == {"all": 0.696, "color == red": 0.696}
    assert figures.energies["color == red"] == 3.2236
    assert figures.collateral_drift == {"shape": 0.0674}
    assert figures.ess == {"stage 1": 0.3954}
    assert figures.closeness == {"stage 1": Closeness(ess_fraction=0.3954, kl=3.0378,
                                                      samples=2000)}
    assert figures.frechet == Frechet(frechet=30.722890344161456,
                                      base_frechet=39.12955296637884, samples=1000,
                                      reference="flow+sir")
    # the sections this run does not have
    assert figures.setting == {} and figures.sliders == {} and figures.pose_error == {}
    assert figures.identity_within is None and figures.identity_between is None
    assert figures.evaluation_error is None


def test_the_base_and_the_truth_are_records_of_their_own():
    figures = RunMetrics.from_dict(load(RUN))
    base = figures.base
    assert isinstance(base, RunMetrics) and base.samples == 8000
    assert base.predicate_share == {"all": 0.6016, "color == red": 0.6016}
    assert base.base is None and base.closeness is None and base.frechet is None
    assert base.truth is not None and base.truth.judge_agreement["color"] == 0.9981
    assert base.truth.collateral_drift is None

    truth = figures.truth
    assert isinstance(truth, Truth)
    assert truth.predicate_share == {"all": 0.6965, "color == red": 0.6965}
    assert truth.kl_to_target == {"dist(size, small=0.7, large=0.3)": 0.26736}
    assert truth.attributes["size"] == {"small": 0.345, "large": 0.655}
    assert truth.judge_agreement == {"shape": 0.9965, "color": 0.999, "size": 0.987}
    assert truth.collateral_drift == TruthDrift(tv={"shape": 0.0681}, base_samples=8000,
                                                base_ess=3038.4)
    assert truth.pose_error == {} and truth.identity_within is None


def test_a_slider_run_reads_its_setting_and_its_sweep():
    figures = RunMetrics.from_dict(load(SLIDER))
    assert figures.setting == {"p": 0.5}
    assert list(figures.sliders) == ["p"]
    rows = figures.sliders["p"]
    assert isinstance(rows, tuple) and len(rows) == 5
    assert all(isinstance(row, SliderRow) for row in rows)
    first = rows[0]
    assert first.value == 0.1
    assert first.requested == {"color = blue": 0.1}
    assert first.judged == {"color = blue": 0.15} and first.truth == {"color = blue": 0.15}
    assert first.predicate_share == {} and first.truth_predicate_share == {}
    assert (first.ess_fraction, first.kl) == (0.8678, 0.0664)
    assert first.kl_to_target == {"dist(color, red=0.45, green=0.45, blue=0.1)": 0.02701}
    assert [row.value for row in rows] == [r["value"] for r in load(SLIDER)["sliders"]["p"]]


def test_a_sweep_row_keeps_judged_and_true_apart():
    row = SliderRow.from_dict({
        "value": 2.0, "requested": {"k": 0.3}, "judged": {"k": 0.31}, "truth": {"k": 0.28},
        "predicate_share": {"all": 0.5}, "truth_predicate_share": {"all": 0.45},
        "kl_to_target": {"t": 0.1}, "truth_kl_to_target": {"t": 0.2},
        "ess_fraction": 0.6, "kl": 0.4})
    assert row == SliderRow(value=2.0, requested={"k": 0.3}, judged={"k": 0.31},
                            truth={"k": 0.28}, predicate_share={"all": 0.5},
                            truth_predicate_share={"all": 0.45}, kl_to_target={"t": 0.1},
                            truth_kl_to_target={"t": 0.2}, ess_fraction=0.6, kl=0.4)


def test_a_conditional_run_reads_its_pose_and_identity_figures():
    figures = RunMetrics.from_dict({
        "samples": 300, "pose_error": {"x": 0.151}, "identity_within": 0.0014,
        "identity_between": 0.9436,
        "truth": {"pose_error": {"x": 0.12}, "identity_within": 0.01, "identity_between": 0.8,
                  "attributes_kept": {"shape": 0.9}}})
    assert figures.pose_error == {"x": 0.151}
    assert (figures.identity_within, figures.identity_between) == (0.0014, 0.9436)
    assert figures.truth == Truth(pose_error={"x": 0.12}, identity_within=0.01,
                                  identity_between=0.8, attributes_kept={"shape": 0.9})


def test_missing_sections_read_as_empty_or_none():
    figures = RunMetrics.from_dict({})
    assert figures == RunMetrics()
    assert figures.samples is None
    for name in ("attributes", "joint", "kl_to_target", "tv_to_target", "kl_to_uniform",
                 "predicate_share", "energies", "collateral_drift", "ess", "pose_error",
                 "setting", "sliders"):
        assert getattr(figures, name) == {}, name
    for name in ("base", "truth", "closeness", "frechet", "identity_within",
                 "identity_between", "evaluation_error"):
        assert getattr(figures, name) is None, name


@pytest.mark.parametrize("data, field, expected", [
    # an empty truth is no truth (the report then has no ground-truth section)
    ({"truth": {}}, "truth", None),
    # a truth without drift on it
    ({"truth": {"collateral_drift": {}, "judge_agreement": {"a": 1.0}}}, "truth",
     Truth(judge_agreement={"a": 1.0})),
    # closeness measured on no stage is not closeness missing (older metrics: ess only)
    ({"closeness": {}}, "closeness", {}),
    ({"sliders": None, "setting": None}, "sliders", {}),
    ({"evaluation_error": ""}, "evaluation_error", None),
    ({"evaluation_error": "out of memory"}, "evaluation_error", "out of memory"),
    ({"base": {}}, "base", RunMetrics()),
])
def test_optional_sections_read_as_the_report_takes_them(data, field, expected):
    assert getattr(RunMetrics.from_dict(data), field) == expected


@pytest.mark.parametrize("path", [RUN, SLIDER], ids=["run", "slider"])
def test_to_dict_gives_back_the_figures_as_written(path):
    data = load(path)
    figures = RunMetrics.from_dict(data)
    again = figures.to_dict()
    assert again == data and list(again) == list(data)
    assert dumps_strict(again, what="metrics") + "\n" == path.read_text()
    assert RunMetrics.from_dict(again) == figures
    again["samples"] = 1  # a copy: the record stays as it was read
    again["attributes"]["color"]["red"] = 0.0
    assert figures.samples == 2000 and figures.to_dict() == data


def test_of_keeps_a_record_and_reads_a_dict():
    figures = RunMetrics.from_dict(load(RUN))
    assert RunMetrics.of(figures) is figures
    assert RunMetrics.of(load(RUN)) == figures


def test_the_record_is_frozen():
    figures = RunMetrics.from_dict(load(RUN))
    with pytest.raises(AttributeError):
        figures.samples = 1  # type: ignore[misc]


@pytest.mark.parametrize("data, words", [
    ([1, 2], "metrics are of type list"),
    ({"attributes": [0.5, 0.5]}, "'attributes' is of type list"),
    ({"attributes": {"shape": 0.5}}, "'shape' is of type float"),
    ({"truth": {"predicate_share": 0.7}}, "truth: 'predicate_share' is of type float"),
    ({"closeness": {"stage 1": 5}}, "closeness is of type int"),
    ({"sliders": {"p": {"value": 0.1}}}, "slider 'p' is of type dict"),
])
def test_a_section_of_the_wrong_kind_is_a_type_error_naming_it(data, words):
    with pytest.raises(TypeError, match=words):
        RunMetrics.from_dict(data)


@pytest.mark.parametrize("data", [
    {"frechet": {"frechet": 1.0, "samples": 10}},  # base_frechet missing
    {"sliders": {"p": [{"requested": {}}]}},      # a sweep row without its value
])
def test_figures_the_report_needs_are_required(data):
    with pytest.raises(KeyError):
        RunMetrics.from_dict(data)
