"""energyql.progress: steady timestamped lines off a terminal, a bar on one, silence when off."""

import io
import re
import subprocess
import sys

import pytest

from energyql.progress import Progress, format_duration, format_figures

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d  ")


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def plain(interval: float = 5.0):
    stream, clock = io.StringIO(), FakeClock()
    return Progress(stream=stream, clock=clock, interval=interval, heartbeat=False), stream, clock


def test_plain_lines_come_at_the_promised_rate_with_first_and_last():
    progress, stream, clock = plain(interval=5.0)
    with progress.task("stage 1: training", total=800, unit="step") as t:
        for step in range(800):
            clock.tick(0.1)  # 80 s in all: 16 intervals of 5 s
            t.update(step + 1, loss=1.0 / (step + 1), share=step / 800)
    lines = stream.getvalue().splitlines()
    assert all(STAMP.match(line) for line in lines), lines
    assert "0/800 step (0%)" in lines[0] and "started" in lines[0]
    assert "800/800 step (100%)" in lines[-1] and "done in 1m20s" in lines[-1]
    assert "loss=0.00125" in lines[-1] and "share=0.999" in lines[-1]
    middle = lines[1:-1]
    assert 14 <= len(middle) <= 16, len(middle)  # one every 5 s, not one per step
    assert all("step/s" in line and "eta" in line for line in middle)


def test_a_fast_task_prints_only_its_first_and_last_line():
    progress, stream, clock = plain()
    with progress.task("grids", total=3, unit="grid") as t:
        for _ in range(3):
            clock.tick(0.2)
            t.advance()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and "3/3 grid" in lines[1] and "done in 0.6s" in lines[1]


def test_a_phase_without_a_count_shows_start_and_its_result():
    progress, stream, clock = plain()
    with progress.phase("fitting λ on 4,096 samples") as p:
        clock.tick(3.0)
        p.note(ess=812.4, max_error=0.0031)
    first, last = stream.getvalue().splitlines()
    assert first.endswith("fitting λ on 4,096 samples  started")
    assert "done in 3.0s" in last and "ess=812" in last and "max_error=0.0031" in last


def test_a_resumed_task_counts_its_rate_from_where_it_resumed():
    progress, stream, clock = plain(interval=1.0)
    with progress.task("stage 1: training", total=100, start=50) as t:
        clock.tick(2.0)
        t.update(60)
    line = stream.getvalue().splitlines()[1]
    assert "60/100 step (60%)" in line and "5 step/s" in line and "eta 8.0s" in line


def test_a_quiet_phase_still_prints_a_line_per_interval_from_the_heartbeat():
    progress, stream, clock = plain(interval=5.0)
    with progress.phase("evaluation (2,000 + 8,000 samples)"):
        for _ in range(26):  # 13 s without an update; the heartbeat calls tick()
            clock.tick(0.5)
            progress.tick()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert lines[1].endswith("5.0s so far") and lines[2].endswith("10.0s so far")
    assert "done in 13.0s" in lines[3]


def test_the_heartbeat_thread_runs_off_a_terminal_and_stops_with_the_last_task():
    import threading
    import time

    stream = io.StringIO()
    progress = Progress(stream=stream, interval=0.05)
    with progress.phase("fitting λ"):
        time.sleep(0.5)
    assert stream.getvalue().count("so far") >= 2
    time.sleep(0.2)
    assert not any(t.name == "energyql-progress" for t in threading.enumerate())


def test_an_error_inside_a_task_says_so_on_its_last_line():
    progress, stream, _ = plain()
    with pytest.raises(RuntimeError), progress.task("evaluation", total=10, unit="batch") as t:
        t.update(4)
        raise RuntimeError("boom")
    assert "stopped by an error" in stream.getvalue().splitlines()[-1]


def test_disabled_progress_prints_nothing():
    stream = Terminal()
    progress = Progress(enabled=False, stream=stream, clock=FakeClock())
    with progress.task("stage 1", total=10) as t:
        t.update(10, loss=1.0)
    with progress.phase("fit"):
        pass
    progress.line("hello")
    assert stream.getvalue() == ""


def test_a_terminal_gets_a_rich_bar_with_the_figures():
    stream = Terminal()
    progress = Progress(stream=stream)
    with progress.task("stage 1: training", total=40) as t:
        with progress.phase("refitting λ"):  # nested: a second line of the same display
            pass
        t.update(40, loss=0.25)
    text = stream.getvalue()
    assert "━" in text and "\x1b[" in text  # a drawn bar with terminal control codes
    assert "stage 1: training" in text and "40/40" in text and "loss=0.25" in text
    assert "refitting λ" in text
    assert not STAMP.search(text)


def test_progress_goes_to_stderr_and_importing_it_does_not_import_torch():
    code = ("import sys, energyql.progress as p\n"
            "with p.task('work', total=2) as t: t.update(2)\n"
            "assert 'torch' not in sys.modules\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and "work  2/2 step (100%)" in done.stderr


def test_formatting_helpers():
    assert format_figures({"loss": 1.23456, "KL size": 0.000123, "n": 3}) == \
        "loss=1.23  KL size=0.000123  n=3"
    assert format_duration(4.24) == "4.2s" and format_duration(185) == "3m05s"
    assert format_duration(3720) == "1h02m"
