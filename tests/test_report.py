"""energyql.report: report.md and a self-contained report.html a person can judge."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from energyql.charts import TARGET_RED
from energyql.manifest import (
    ContextRecord,
    FlowRecord,
    GeneratorRecord,
    Manifest,
    StageRecord,
    TrainRecord,
)
from energyql.report import (
    StageView,
    collateral_drift_notes,
    headline_rows,
    save_stage_grids,
    what_was_asked,
    write_report,
)


def picture(path: Path, colour, size=(96, 96)) -> Path:
    image = Image.new("RGB", size, (20, 20, 24))
    for k in range(0, size[0], 16):
        image.paste(colour, (k + 2, k // 2 + 2, k + 12, k // 2 + 12))
    image.save(path)
    return path


def manifest(canonical, stages, context=None):
    """A typed manifest of a trained run (30 steps per stage), as the report reads it."""
    records = []
    for k, source in enumerate(stages, 1):
        params = tuple(ContextRecord(**c) for c in context) \
            if context and k == len(stages) else ()
        records.append(StageRecord(index=k, source=source,
                                   flow=FlowRecord(dim=32, context_dim=len(params)),
                                   context=params, train=TrainRecord({"steps": 30}, 2.5),
                                   final_loss=1.25))
    return Manifest(source=canonical, canonical=canonical,
                    generator=GeneratorRecord("shapes", "ab" * 32, 32, "shapes"),
                    stages=tuple(records))


def shares(shape, colour=(0.6, 0.3, 0.1), size=(0.4, 0.6)):
    return {"shape": dict(zip(("circle", "square", "triangle"), shape)),
            "color": dict(zip(("red", "green", "blue"), colour)),
            "size": dict(zip(("small", "large"), size))}


POSE_METRICS = {
    "samples": 300, "attributes": shares((0.35, 0.32, 0.33)), "kl_to_target": {},
    "predicate_share": {}, "ess": {}, "collateral_drift": {},
    "pose_error": {"x": 0.151}, "identity_within": 0.0014, "identity_between": 0.9436,
    "base": {"samples": 1200, "attributes": shares((0.52, 0.36, 0.12))},
}


@pytest.fixture
def pose_run(tmp_path):
    picture(tmp_path / "samples.png", (200, 40, 40))
    picture(tmp_path / "base.png", (40, 200, 40))
    (tmp_path / "log.jsonl").write_text('{"event": "step", "stage": 1, "step": 0, "loss": 1}\n')
    picture(tmp_path / "curves.png", (40, 40, 200))
    m = manifest("pose(x in 0.3..0.7) & keep(identity)",
                 ["pose(x in 0.3..0.7) & keep(identity)"],
                 context=[{"control": "pose", "name": "x", "low": 0.3, "high": 0.7}])
    write_report(tmp_path, m, POSE_METRICS)
    return tmp_path


def test_a_conditional_run_shows_pose_identity_and_the_sweep_in_its_headline(pose_run):
    report = (pose_run / "report.md").read_text()
    headline = report.split("## Headline figures")[1].split("## Stages")[0]
    assert "pose error of x" in headline and "0.151" in headline
    assert "identity distance within one noise" in headline and "0.0014" in headline
    assert "identity distance between noises" in headline and "0.9436" in headline
    assert "![sweep](samples.png)" in headline
    assert "x from 0.3 (left) to 0.7 (right)" in headline


def test_drift_the_program_did_not_ask_for_is_flagged_in_words(pose_run):
    report = (pose_run / "report.md").read_text()
    assert "shape = triangle: 0.12 → 0.33 (+0.21): the program did not ask for this" in report
    assert "shape = circle: 0.52 → 0.35 (-0.17)" in report
    assert "color =" not in report  # unchanged attributes stay quiet


def test_mentioned_attributes_and_small_moves_are_not_flagged():
    metrics = {"attributes": shares((0.9, 0.05, 0.05), size=(0.45, 0.55)),
               "base": {"attributes": shares((0.5, 0.3, 0.2), size=(0.4, 0.6))},
               "collateral_drift": {"size": 0.05, "color": 0.2}}
    asked = what_was_asked(manifest("shape == circle", ["shape == circle"]))
    assert asked.mentioned == {"shape"} and asked.targets == {"shape": {"circle": 1.0}}
    notes = collateral_drift_notes(metrics, asked, threshold=0.1)
    assert len(notes) == 1 and notes[0].startswith("color drifted 0.20 (total variation)")


def test_drift_on_ground_truth_is_stated_with_its_error_and_its_reference():
    truth_drift = {"tv": {"size": 0.19, "color": 0.01}, "tv_se": {"size": 0.02, "color": 0.01},
                   "base_samples": 60000, "base_ess": 523.4, "flow_samples": 2000,
                   "reference_ess": 912.0}
    metrics = {"attributes": shares((0.9, 0.05, 0.05), size=(0.3, 0.7)),
               "base": {"attributes": shares((0.5, 0.3, 0.2), size=(0.4, 0.6))},
               "collateral_drift": {"size": 0.15}, "truth": {"collateral_drift": truth_drift}}
    asked = what_was_asked(manifest("shape == circle", ["shape == circle"]))
    notes = collateral_drift_notes(metrics, asked, threshold=0.1)
    assert notes[-1].startswith("size drifted 0.19 ± 0.02 (total variation on ground truth)")
    rows = {row[0]: row[2] for row in headline_rows(metrics)}
    assert rows["collateral drift of size (TV to exact target, ground truth; 60000 base "
                "samples pooled with the sampler's 2000, ESS 912.0)"] == "0.19 ± 0.02"


def test_report_links_the_log_and_curves_and_the_html_is_self_contained(pose_run):
    report = (pose_run / "report.md").read_text()
    assert "[training log (one JSON object per step)](log.jsonl)" in report
    assert "[training curves](curves.png)" in report
    page = (pose_run / "report.html").read_text()
    assert '<a href="log.jsonl">' in page and '<a href="curves.png">' in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) >= 5 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page and "<link" not in page and "http" not in page
    assert "<h2>Headline figures</h2>" in page and "shape = triangle: 0.12 → 0.33" in page


def test_each_stage_shows_the_stage_before_and_the_base_side_by_side(tmp_path):
    for name, colour in (("base.png", (90, 90, 90)), ("stage1.png", (200, 40, 40)),
                         ("stage2.png", (40, 40, 200))):
        picture(tmp_path / name, colour)
    stage1 = {"samples": 100, "attributes": shares((0.9, 0.05, 0.05)),
              "predicate_share": {"shape == circle": 0.9}, "kl_to_target": {}}
    final = {"samples": 100, "attributes": shares((0.88, 0.06, 0.06), size=(0.5, 0.5)),
             "predicate_share": {"shape == circle": 0.88}, "kl_to_target": {"size": 0.001},
             "base": {"samples": 400, "attributes": shares((0.5, 0.3, 0.2)),
                      "kl_to_target": {"size": 0.02}, "predicate_share": {"shape == circle": 0.5}}}
    views = [StageView(1, "shape == circle", (("base", "base.png"), ("stage 1", "stage1.png")),
                       metrics=stage1),
             StageView(2, "uniform(size)", (("base", "base.png"), ("stage 1", "stage1.png"),
                                            ("stage 2", "stage2.png")),
                       metrics=final, previous=stage1)]
    m = manifest("shape == circle | then uniform(size)", ["shape == circle", "uniform(size)"])
    write_report(tmp_path, m, final, stages=views)
    report = (tmp_path / "report.md").read_text()
    stage2 = report.split("### Stage 2")[1].split("## Attributes")[0]
    assert "| base | stage 1 | stage 2 |" in stage2 and "![stage 2](stage2.png)" in stage2
    assert "| figure | stage 1 | stage 2 |" in stage2
    assert "| share satisfying shape == circle | 0.9 | 0.88 |" in stage2
    assert "small=0.40 large=0.60 | small=0.50 large=0.50" in stage2
    # the histograms show the stage before as a third group, with uniform(size)'s target
    size_table = report.split("### size")[1]
    assert "| value | base | stage 1 | controlled | target |" in size_table
    assert "| small | 0.400 | 0.400 | 0.500 | 0.5 |" in size_table


def test_histograms_have_the_target_marked_only_where_the_program_set_one(tmp_path):
    metrics = {"samples": 10, "attributes": shares((0.7, 0.2, 0.1)),
               "base": {"attributes": shares((0.5, 0.3, 0.2))}}
    write_report(tmp_path, manifest("shape == circle", ["shape == circle"]), metrics)

    def red_pixels(name):
        colours = Image.open(tmp_path / name).convert("RGB").getcolors(maxcolors=1 << 24)
        return sum(count for count, colour in colours if colour == TARGET_RED)

    assert red_pixels("hist_shape.png") > 30  # three target marks and the legend
    assert red_pixels("hist_color.png") == 0
    shape = Image.open(tmp_path / "hist_shape.png")
    assert shape.width >= 300 and shape.height >= 250


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.mark.skipif(_browser() is None, reason="no headless browser (chromium) installed")
def test_the_html_report_renders_in_a_real_browser(pose_run, tmp_path):
    browser = _browser()
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = (pose_run / "report.html").as_uri()
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, "--window-size=1100,1400", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120, check=True)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1100, 1400)
    colours = image.getcolors(maxcolors=1 << 24)
    white = sum(count for count, colour in colours if colour == (255, 255, 255))
    assert 1 - white / (image.width * image.height) > 0.05, "the page rendered blank"
    assert len(colours) > 50  # text, tables and the inlined images, not one flat colour
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    headings = re.findall(r"<h2>(.*?)</h2>", dom)
    assert headings == ["Headline figures", "Stages", "Attributes"]
    assert dom.count("<img") >= 5 and "pose error of x" in dom


def test_save_stage_grids_draws_the_same_noise_through_every_stage(tmp_path):
    import torch

    from energyql.flows import FlowConfig, LatentFlow
    from energyql.sampler import StageSampler
    from tests.toys import TinyImageGenerator

    base = TinyImageGenerator(latent_dim=8)
    first = StageSampler(base, LatentFlow(FlowConfig(dim=8, blocks=2, width=16, seed=1)), 1,
                         "color == red")
    second = StageSampler(first, LatentFlow(FlowConfig(dim=8, blocks=2, width=16, seed=2)), 2,
                          "uniform(size)")
    views = save_stage_grids(tmp_path, second.eval(), torch.randn(4, 8))
    assert [(v.index, v.source) for v in views] == [(1, "color == red"), (2, "uniform(size)")]
    assert views[1].panels == (("base", "base.png"), ("stage 1", "stage1.png"),
                               ("stage 2", "stage2.png"))
    pictures = [Image.open(tmp_path / name) for name in ("base.png", "stage1.png", "stage2.png")]
    assert len({p.size for p in pictures}) == 1
    assert len({p.tobytes() for p in pictures}) == 3  # each stage moved the same noise elsewhere


def test_truth_section_sets_judged_beside_true_and_warns_where_they_part():
    from energyql.report import truth_blocks

    metrics = {"predicate_share": {"all": 0.9}, "attributes": {"size": {"small": 0.5,
                                                                       "large": 0.5}},
               "truth": {"predicate_share": {"all": 0.7},
                         "attributes": {"size": {"small": 0.52, "large": 0.48}},
                         "judge_agreement": {"size": 0.97}}}
    blocks = truth_blocks(metrics)
    text = " ".join(str(getattr(b, "text", "")) for b in blocks)
    assert "judged 0.900 but 0.700" in text and "fooling its judge" in text
    assert "size = small" not in text  # 0.02 apart: within the gap
    assert truth_blocks({"predicate_share": {"all": 0.9}}) == []
