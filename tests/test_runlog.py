"""energyql.runlog: log.jsonl written strictly, continued on resume, read back; curves.png drawn."""

import json
import math

import pytest
from PIL import Image

from energyql.errors import ArtifactError
from energyql.runlog import RunLog, read_log, write_curves


def fake_clock():
    now = [100.0]

    def clock():
        now[0] += 0.5
        return now[0]

    return clock


def a_run(directory, steps=range(10), stage=1):
    with RunLog(directory, clock=fake_clock()) as log:
        for step in steps:
            log.step(stage=stage, step=step, loss=2.0 / (step + 1),
                     parts={"color == red": 1.0 / (step + 1)},
                     figures={"on-target share": step / 10})
            if step % 5 == 4:
                log.fit(stage=stage, step=step + 1, lam={"size": [0.1, -0.2]},
                        shares={"size": [0.4, 0.6]}, ess=812.0)


def test_records_are_read_back_as_written_one_json_object_per_line(tmp_path):
    a_run(tmp_path)
    lines = (tmp_path / "log.jsonl").read_text().splitlines()
    assert len(lines) == 12 and all(json.loads(line) for line in lines)
    records = read_log(tmp_path)
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(10))
    assert steps[3]["loss"] == 0.5 and steps[3]["parts"] == {"color == red": 0.25}
    assert steps[3]["figures"] == {"on-target share": 0.3}
    assert steps[1]["seconds"] > steps[0]["seconds"]
    fits = [r for r in records if r["event"] == "fit"]
    assert [f["step"] for f in fits] == [5, 10]
    assert fits[0]["lambda"] == {"size": [0.1, -0.2]} and fits[0]["ess"] == 812.0


def test_non_finite_numbers_become_null_so_the_file_is_strict_json(tmp_path):
    with RunLog(tmp_path) as log:
        log.step(stage=1, step=0, loss=float("nan"), parts={"a": float("inf")},
                 figures={"KL size": -math.inf})
    text = (tmp_path / "log.jsonl").read_text()
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict {c}"))
    assert record["loss"] is None and record["parts"] == {"a": None}


def test_each_record_is_on_disk_before_the_log_is_closed(tmp_path):
    log = RunLog(tmp_path)
    log.step(stage=1, step=0, loss=1.0)
    assert len(read_log(tmp_path)) == 1  # flushed: a kill now would keep it
    log.close()


def test_a_resumed_run_continues_the_file_without_duplicating_steps(tmp_path):
    a_run(tmp_path, steps=range(8))
    a_run(tmp_path, steps=range(5, 10))  # resumed from the checkpoint at step 5
    records = read_log(tmp_path)
    steps = [r["step"] for r in records if r["event"] == "step"]
    assert steps == list(range(10))
    assert [r["step"] for r in records if r["event"] == "fit"] == [5, 10]


def test_a_truncated_last_line_is_ignored_when_reading_and_cut_on_resume(tmp_path):
    a_run(tmp_path, steps=range(4))
    path = tmp_path / "log.jsonl"
    path.write_text(path.read_text() + '{"event": "step", "stage": 1, "st')  # killed mid-write
    assert [r["step"] for r in read_log(path)] == [0, 1, 2, 3]
    a_run(tmp_path, steps=range(4, 6))
    assert [r["step"] for r in read_log(path) if r["event"] == "step"] == [0, 1, 2, 3, 4, 5]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_a_damaged_line_in_the_middle_is_an_error_naming_it(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"event": "step", "stage": 1, "step": 0}\nnot json\n{"step": 2}\n')
    with pytest.raises(ArtifactError, match="line 2") as error:
        read_log(path)
    assert error.value.hint


def test_a_disabled_log_writes_nothing(tmp_path):
    with RunLog(tmp_path, enabled=False) as log:
        assert log.step(stage=1, step=0, loss=1.0) is False
    assert not (tmp_path / "log.jsonl").exists()


def test_curves_png_has_a_loss_and_a_target_panel_per_stage(tmp_path):
    a_run(tmp_path, steps=range(30))
    a_run(tmp_path, steps=range(20), stage=2)
    path = write_curves(tmp_path, tmp_path / "curves.png")
    picture = Image.open(path)
    assert picture.format == "PNG"
    assert picture.width >= 800 and picture.height >= 500  # 2 columns x 2 stages of panels
    colours = picture.convert("RGB").getcolors(maxcolors=1 << 16)
    assert len(colours) > 8  # lines, axes and labels were drawn, not a blank canvas
    assert write_curves([], tmp_path / "none.png") is None
