"""Slider to grid on the explorer page: how long a pose slider move takes to show 16 new images.

    python benchmarks/explorer.py [--run PATH] [--moves 30] [--threads 1] [--json PATH]

Without ``--run`` a shapes run ``pose(x in 0.3..0.7) & keep(identity)`` is trained first with
the world's default flow (8 blocks of width 256) for ``--steps`` steps (the flow's size, not
its training, sets the cost of a grid). The explorer is served from this process on a free
loopback port and driven by headless chromium (Debian's, through Playwright): for each move the
page's own clock runs from setting the slider (its ``input`` event) until the new grid has
loaded into the ``<img>`` (the request, 16 samples through the flow and the generator, the
judges' histograms, PNG encoding, transfer and decoding). The server's own share is the
``seconds`` each draw reports. Needs ``pip install -e ".[test]"`` and ``apt-get install
chromium``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

MEASURE = """async (values) => {
    const slider = document.getElementById('slider-x');
    const grid = document.getElementById('grid');
    const shown = () => grid.dataset.key && JSON.parse(grid.dataset.key).context.x;
    const times = [];
    for (const value of values) {
        const began = performance.now();
        slider.value = value;
        slider.dispatchEvent(new Event('input'));
        const wanted = Number(slider.value);
        while (shown() !== wanted) await new Promise((done) => setTimeout(done, 1));
        times.push(performance.now() - began);
        await new Promise((done) => setTimeout(done, 50));  // a hand pausing on the slider
    }
    return times;
}"""


def _train(out: Path, steps: int, threads: int) -> Path:
    import energyql as eq

    eq.train("pose(x in 0.3..0.7) & keep(identity)", gen="shapes", out=out, steps=steps,
             threads=threads, progress=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a conditional shapes run with parameter x")
    parser.add_argument("--steps", type=int, default=20, help="training steps without --run")
    parser.add_argument("--moves", type=int, default=30, help="slider moves timed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--chromium", default=os.environ.get("ENERGYQL_CHROMIUM",
                                                             "/usr/bin/chromium"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    import torch
    from playwright.sync_api import sync_playwright

    from energyql.app import start_in_thread

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as scratch:
        run = args.run or _train(Path(scratch) / "pose", args.steps, args.threads)
        runs_dir, name = run.resolve().parent, run.resolve().name
        server = start_in_thread(str(runs_dir), threads=args.threads)
        drawn: list[float] = []
        explorer = server.app.state.explorer
        original = explorer.draw

        def timed_draw(*a, **k):
            result = original(*a, **k)
            drawn.append(result.seconds)
            return result

        explorer.draw = timed_draw
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium,
                                                     headless=True, args=["--no-sandbox"])
                page = browser.new_page()
                page.goto(server.url)
                page.wait_for_selector('body[data-ready="1"]')
                page.select_option("#run-select", name)
                page.wait_for_selector("#grid[data-key]")
                page.evaluate(MEASURE, ["0.35", "0.65"])  # warm-up: the judges load
                drawn.clear()
                values = [f"{0.3 + 0.4 * ((i * 37) % 100) / 100:.3f}" for i in range(args.moves)]
                began = time.perf_counter()
                times = page.evaluate(MEASURE, values)
                wall = time.perf_counter() - began
                browser.close()
        finally:
            server.stop()
    ordered = sorted(times)
    figures = {
        "run": str(run), "moves": len(times), "threads": args.threads,
        "slider_to_grid_ms": {"median": round(statistics.median(times), 1),
                              "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 1),
                              "max": round(ordered[-1], 1)},
        "server_draw_ms": {"median": round(1000 * statistics.median(drawn), 1),
                           "max": round(1000 * max(drawn), 1)},
        "draws": len(drawn), "wall_s": round(wall, 2), "torch": torch.__version__,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
