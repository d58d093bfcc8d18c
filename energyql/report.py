"""Run reports a person can judge: ``report.md`` and a self-contained ``report.html``.

The report is built once as a list of blocks (headings, text, tables, figures, warnings) and
rendered twice: Markdown that links the PNG files beside it, and HTML with every image inlined
as a data URI (no external CSS, scripts or files needed to read it; the run's files are linked).

What it shows:

- the headline figures, base beside controlled: KL to each target, predicate shares, drift, ESS;
  for a conditional run also the pose error, identity within and between, and the sweep grid;
- collateral drift in words when an attribute the program does not mention moved by at least
  ``drift_threshold`` (e.g. "shape = triangle: 0.12 → 0.33: the program did not ask for this");
- one section per stage with its image panels side by side (the base, the stage before it,
  this stage: see :class:`StageView`) and, where given, its figures beside the stage before;
- per attribute a histogram with axes and the program's target marked in red;
- links to ``log.jsonl`` and ``curves.png`` (inlined in the HTML) when the run wrote them.

Typical call (what ``energyql run`` does after evaluation)::

    views = save_stage_grids(out, sampler, noise)                 # stage<k>.png, base.png
    write_report(out, manifest, metrics, stages=views)            # report.md + report.html
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from energyql.io import write_bytes, write_text
from energyql.manifest import Manifest
from energyql.metrics import RunMetrics, SliderRow, TruthDrift

DRIFT_THRESHOLD = 0.1
LOG_NAME = "log.jsonl"
CURVES_NAME = "curves.png"


# ---------------------------------------------------------------------------------------------
# grids (torch is imported inside, so that reading this module stays light)

def grid_png(images, *, columns: int | None = None, scale: int = 1) -> bytes:
    """Return PNG bytes of a grid of images in [0, 1] (``scale`` enlarges small images)."""
    from PIL import Image
    from torchvision.utils import make_grid

    columns = columns or max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images.detach().float().cpu().clamp(0, 1), nrow=columns, padding=2,
                     pad_value=1.0)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
    picture = Image.fromarray(array)
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale),
                                 Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def save_grid(path: str | Path, images, **options) -> Path:
    """Write a grid of images as a PNG file (atomically)."""
    return write_bytes(path, grid_png(images, **options))


# ---------------------------------------------------------------------------------------------
# the data model a caller hands in

@dataclass(frozen=True)
class StageView:
    """One stage as the report shows it.

    Arguments:
        index: the stage number (1 for the first).
        source: the stage's canonical expression.
        panels: ``(label, image file)`` pairs shown side by side in this order, typically
            ``("base", "base.png"), ("stage 1", "stage1.png"), ("stage 2", "stage2.png")``;
            relative paths are taken relative to the report's directory.
        metrics: this stage's evaluation figures (``metrics.json`` dict or its
            :class:`~energyql.metrics.RunMetrics`), if evaluated.
        previous: the figures of the stage before it (None for stage 1: the base figures are
            the run's ``base``).
        caption: a line under the panels (e.g. how a sweep grid is laid out).
    """

    index: int
    source: str
    panels: tuple[tuple[str, str | Path], ...] = ()
    metrics: RunMetrics | Mapping[str, Any] | None = None
    previous: RunMetrics | Mapping[str, Any] | None = None
    caption: str = ""


def stage_noise_views(manifest: Manifest, directory: str | Path) -> list[StageView]:
    """Return the views of the files ``save_stage_grids`` wrote (or of samples/base.png)."""
    stages = manifest.stages
    return _noise_views([s.source for s in stages], stages[-1].context if stages else (),
                        Path(directory))


def _noise_views(sources: Sequence[str], context: Sequence[Any],
                 directory: Path) -> list[StageView]:
    """Views of ``stage<k>.png`` for stages with these sources; else base and samples.png.

    ``context`` is the last stage's parameters (each with ``name``, ``low``, ``high``).
    """
    views = []
    for k, source in enumerate(sources, 1):
        own = directory / f"stage{k}.png"
        if not own.exists():
            continue
        panels = [("base", "base.png")]
        if k > 1:
            panels.append((f"stage {k - 1}", f"stage{k - 1}.png"))
        panels.append((f"stage {k}", own.name))
        views.append(StageView(k, source, tuple(panels)))
    if views or not sources:
        return views
    panels = [(label, name) for label, name in (("base, same noise", "base.png"),
                                                 ("controlled", "samples.png"))
              if (directory / name).exists()]
    sweep = _sweep_caption(context)
    caption = f"Left: base samples; right: {sweep[0].lower()}{sweep[1:]}" if sweep \
        else "Same noise in both panels."
    return [StageView(len(sources), sources[-1], tuple(panels), caption=caption)]


def save_stage_grids(directory: str | Path, sampler, noise, *, scale: int | None = None
                     ) -> list[StageView]:
    """Write ``base.png`` and ``stage<k>.png`` (same noise through every stage) and return
    one StageView per stage with the base, the stage before and the stage side by side.

    A conditional stage is drawn at the middle of its parameters' ranges.
    """
    import torch

    directory = Path(directory)
    stages = sampler.stages
    size = getattr(sampler, "image_size", None)
    scale = scale or (2 if size and size <= 64 else 1)
    device = next(iter(stages[-1].flow.parameters())).device
    noise = noise.to(device)
    with torch.no_grad():
        save_grid(directory / "base.png", sampler.root.decode(noise), scale=scale)
        for stage in stages:
            context = stage.context_tensor({}, len(noise)).to(device) \
                if stage.context_params else None
            save_grid(directory / f"stage{stage.index}.png", stage.decode(noise, context),
                      scale=scale)
    return _noise_views([s.source for s in stages], stages[-1].context_params, directory)


# ---------------------------------------------------------------------------------------------
# what the program asked for (torch-free: the canonical expression, compiled)

@dataclass
class Asked:
    """Attributes the program mentions and the target shares it sets, per attribute."""

    mentioned: set[str] = field(default_factory=set)
    targets: dict[str, dict[str, float]] = field(default_factory=dict)
    known: bool = True


def _walk(node: Any, asked: Asked) -> None:
    if isinstance(node, dict):
        if isinstance(node.get("attr"), str):
            asked.mentioned.add(node["attr"])
        for name in node.get("attrs", []) or []:
            asked.mentioned.add(name)
        for value in node.values():
            _walk(value, asked)
    elif isinstance(node, list):
        for value in node:
            _walk(value, asked)


def what_was_asked(manifest: Manifest) -> Asked:
    """Return the attributes the manifest's program mentions and its per-attribute targets."""
    from energyql.errors import EnergyQLError
    from energyql.lang.api import compile as compile_program

    asked = Asked()
    generator = manifest.generator
    try:
        program = compile_program(manifest.canonical).checked(
            generator.catalog or generator.id)
    except (EnergyQLError, KeyError, TypeError):
        try:
            program = compile_program(manifest.canonical)
        except EnergyQLError:
            asked.known = False
            return asked
    for stage in program.stages:
        for term in stage.terms:
            data = term.to_dict()
            _walk(data, asked)
            if data.get("type") == "predicate":
                asked.targets.setdefault(data["attr"], {})[data["value"]] = 1.0
            if data.get("type") == "constraint" and len(data.get("attrs", [])) == 1 \
                    and data.get("values") and data.get("target"):
                asked.targets[data["attrs"][0]] = dict(zip(data["values"][0], data["target"]))
    return asked


# ---------------------------------------------------------------------------------------------
# blocks: built once, rendered as Markdown and as HTML

@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Text:
    text: str  # code spans made by code(); everything else is shown as plain text


# Code spans are marked with two private-use characters rather than backticks, so that text
# from a user (a prompt holding a backtick, "<svg onload=...>", "[x](javascript:...)") can
# neither close a span nor become live Markdown or HTML: each renderer escapes the plain text
# and fences the code its own way.
_OPEN, _CLOSE = "\ue000", "\ue001"
_SPAN = re.compile(f"{_OPEN}([^{_OPEN}{_CLOSE}]*){_CLOSE}")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>&|#!~])")


def code(text: str) -> str:
    """Return ``text`` marked as a code span for the report's blocks (shown verbatim)."""
    clean = str(text).replace(_OPEN, "").replace(_CLOSE, "")
    return f"{_OPEN}{clean}{_CLOSE}"


def _parts(text: str) -> list[tuple[bool, str]]:
    """Split block text into (is_code, text) parts, newlines flattened to spaces."""
    flat = re.sub(r"[\r\n]+", " ", text)
    out, at = [], 0
    for match in _SPAN.finditer(flat):
        out.append((False, flat[at:match.start()]))
        out.append((True, match.group(1)))
        at = match.end()
    out.append((False, flat[at:]))
    return [(is_code, part.replace(_OPEN, "").replace(_CLOSE, "")) for is_code, part in out
            if part or is_code]


def _md_code(text: str) -> str:
    """A Markdown code span holding ``text`` verbatim: its fence is longer than any run of
    backticks inside, and padded so that a leading or trailing backtick stays inside."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) else ""
    return f"{fence}{pad}{text}{pad}{fence}" if text else "` `"


def _md_path(path: str) -> str:
    """A relative file name as a Markdown link destination (angle-bracketed when unusual)."""
    text = str(path)
    if re.fullmatch(r"[A-Za-z0-9_./-]+", text):
        return text
    return "<" + re.sub(r"([<>\\])", r"\\\1", re.sub(r"[\r\n]", " ", text)) + ">"


def _md_inline(text: str) -> str:
    """Block text as Markdown: code spans fenced, plain text with Markdown and HTML escaped."""
    return "".join(_md_code(part) if is_code else _MD_SPECIAL.sub(r"\\\1", part)
                   for is_code, part in _parts(text))


@dataclass
class Table:
    rows: list[list[str]]  # the first row is the header


@dataclass
class Figures:
    items: list[tuple[str, str]]  # (caption, file relative to the report)
    caption: str = ""


@dataclass
class Warning:
    text: str


@dataclass
class Links:
    items: list[tuple[str, str]]  # (label, file)


def _count(value: int | None) -> str:
    """A count of samples in running text ("—" where it was not recorded)."""
    return "—" if value is None else str(value)


def _fmt(value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _base(metrics: RunMetrics) -> RunMetrics:
    """The base figures of ``metrics`` (none where the base was not measured)."""
    return metrics.base if metrics.base is not None else RunMetrics()


def _truth_drift_record(metrics: RunMetrics) -> TruthDrift | None:
    """The collateral drift on ground truth, None where not measured."""
    return metrics.truth.collateral_drift if metrics.truth is not None else None


def _truth_drift(metrics: RunMetrics) -> Mapping[str, float]:
    """The collateral drift on ground truth (attribute -> TV), empty where not measured."""
    record = _truth_drift_record(metrics)
    return record.tv if record is not None else {}


def _reference_words(drift: TruthDrift) -> str:
    """How the exact target behind a drift figure was estimated, in words."""
    words = f"{drift.base_samples} base samples"
    if drift.flow_samples:
        words += f" pooled with the sampler's {drift.flow_samples}"
        return f"{words}, ESS {drift.reference_ess}"
    return f"{words}, ESS {drift.base_ess}"


def _error_words(error: float | None) -> str:
    return f" ± {_fmt(error)}" if error else ""


def collateral_drift_notes(metrics: RunMetrics | Mapping[str, Any], asked: Asked, *,
                           previous: RunMetrics | Mapping[str, Any] | None = None,
                           threshold: float = DRIFT_THRESHOLD) -> list[str]:
    """Return sentences for every value of an unmentioned attribute whose share moved by at
    least ``threshold`` from ``previous`` (default: the base), and every drift (TV to the exact
    target) at or above it."""
    metrics = RunMetrics.of(metrics)
    before = RunMetrics.of(previous) if previous is not None else _base(metrics)
    notes = []
    for attribute, shares in metrics.attributes.items():
        if attribute in asked.mentioned or not asked.known:
            continue
        for value, share in shares.items():
            old = before.attributes.get(attribute, {}).get(value)
            if old is not None and abs(share - old) >= threshold:
                notes.append(f"{attribute} = {value}: {old:.2f} → {share:.2f} "
                             f"({share - old:+.2f}): the program did not ask for this")
    # Where the world knows what it drew, the drift on ground truth is the one to state.
    truth_drift = _truth_drift(metrics)
    drift: Mapping[str, float | None]
    drift, where = (truth_drift, " on ground truth") if truth_drift else \
        (metrics.collateral_drift, "")
    record = _truth_drift_record(metrics)
    errors = record.tv_se if truth_drift and record is not None else {}
    for attribute, tv in drift.items():
        if tv is not None and tv >= threshold:
            error = errors.get(attribute)
            measured = f"{tv:.2f} ± {error:.2f}" if isinstance(error, (int, float)) and error \
                else f"{tv:.2f}"
            notes.append(f"{attribute} drifted {measured} (total variation{where}) from the "
                         f"exact target's distribution: the program did not ask for this")
    return notes


def _sweep_caption(params: Sequence[Any]) -> str:
    """How the sweep grid is laid out, for a conditional stage's parameters (else "")."""
    if not params:
        return ""
    first = params[0]
    return (f"Sweep: one row per noise, {first.name} from {first.low:g} (left) to "
            f"{first.high:g} (right)"
            + (", the other parameters mid-range." if len(params) > 1 else "."))


def headline_rows(metrics: RunMetrics | Mapping[str, Any]) -> list[list[str]]:
    """Return the headline table (figure, base, controlled) of a run's metrics."""
    metrics = RunMetrics.of(metrics)
    base = _base(metrics)
    rows = [["figure", "base", "controlled"]]
    if metrics.setting:
        where = ", ".join(f"{k}={_fmt(v)}" for k, v in metrics.setting.items())
        rows.append(["slider setting of every figure below", "—", where])
    for key, value in metrics.kl_to_target.items():
        rows.append([f"KL to target ({key})", _fmt(base.kl_to_target.get(key)), _fmt(value)])
    for key, value in metrics.predicate_share.items():
        rows.append([f"share satisfying {key}", _fmt(base.predicate_share.get(key)),
                     _fmt(value)])
    for key, value in metrics.pose_error.items():
        rows.append([f"pose error of {key} (mean |read − requested|)", "—", _fmt(value)])
    if metrics.identity_within is not None:
        rows.append(["identity distance within one noise across the sweep (lower: kept)", "—",
                     _fmt(metrics.identity_within)])
    if metrics.identity_between is not None:
        rows.append(["identity distance between noises (the scale to compare with)", "—",
                     _fmt(metrics.identity_between)])
    for key, tv in metrics.collateral_drift.items():
        rows.append([f"collateral drift of {key} (TV to exact target, judged)", "—", _fmt(tv)])
    truth_drift = _truth_drift_record(metrics)
    if truth_drift is not None:
        for key, value in truth_drift.tv.items():
            rows.append([f"collateral drift of {key} (TV to exact target, ground truth; "
                         f"{_reference_words(truth_drift)})", "—",
                         _fmt(value) + _error_words(truth_drift.tv_se.get(key))])
    if metrics.frechet is not None:
        frechet = metrics.frechet
        rows.append([f"Fréchet distance to the exact target ({frechet.samples} samples, "
                     "world judge's features; lower: closer, 0 is the target)",
                     _fmt(frechet.base_frechet), _fmt(frechet.frechet)])
    for key, closeness in (metrics.closeness or {}).items():
        rows.append([f"ESS/N towards the exact target ({key}; 1: the flow is the target)", "—",
                     _fmt(closeness.ess_fraction)])
        rows.append([f"KL̂ to the exact target ({key}; 0: the flow is the target)", "—",
                     _fmt(closeness.kl)])
    if metrics.closeness is None:  # metrics written before closeness was measured
        for key, value in metrics.ess.items():
            rows.append([f"ESS fraction towards the exact target ({key})", "—", _fmt(value)])
    return rows


# Below this ESS/N the report says that the samples differ from the exact target.
LOW_ESS_FRACTION = 0.1


def closeness_notes(manifest: Manifest, metrics: RunMetrics | Mapping[str, Any]) -> list[str]:
    """Sentences on how the flow's samples relate to the exact target: a tempered target
    (trained so on purpose) and a low ESS/N (the samples differ from the target)."""
    notes = []
    for stage in manifest.stages:
        temper = (stage.train.settings.get("temper") if stage.train is not None else None)
        if isinstance(temper, (int, float)) and temper != 1:
            notes.append(f"stage {stage.index} was trained towards a tempered target "
                         f"(pointwise energies × {temper:g}, asked for with --temper), not its "
                         "exact target: its figures measure the tempered flow")
    for key, closeness in (RunMetrics.of(metrics).closeness or {}).items():
        ess = closeness.ess_fraction
        if isinstance(ess, (int, float)) and ess < LOW_ESS_FRACTION:
            notes.append(f"{key}: ESS/N is {ess:.3f} (KL̂ {closeness.kl}): samples differ "
                         "from the exact target; `--sampler flow+sir` corrects them")
    return notes


# Where judged and true shares part by more than this, the report says so.
TRUTH_GAP = 0.05


def truth_blocks(metrics: RunMetrics | Mapping[str, Any], gap: float = TRUTH_GAP) -> list:
    """Return the ground-truth section: judged vs true figures, the judge's agreement, and
    a warning wherever they part (a flow that fools its judge). Empty without truth."""
    metrics = RunMetrics.of(metrics)
    truth = metrics.truth
    if truth is None:
        return []
    rows = [["figure", "judged", "true"]]
    warnings = []
    for label, true_figures, judged_figures in (
            ("predicate share", truth.predicate_share, metrics.predicate_share),
            ("kl to target", truth.kl_to_target, metrics.kl_to_target),
            ("tv to target", truth.tv_to_target, metrics.tv_to_target)):
        for name, true in true_figures.items():
            judged = judged_figures.get(name)
            rows.append([f"{label}: {name}", _fmt(judged), _fmt(true)])
            if label == "predicate share" and judged is not None and abs(judged - true) > gap:
                warnings.append(f"share satisfying {name}: judged {judged:.3f} but "
                                f"{true:.3f} on what was drawn")
    for attribute, shares in truth.attributes.items():
        judged_shares = metrics.attributes.get(attribute, {})
        rows.append([f"{attribute} (judged · true)",
                     " ".join(f"{v}={judged_shares.get(v, 0):.2f}" for v in shares),
                     " ".join(f"{v}={s:.2f}" for v, s in shares.items())])
        for value, share in shares.items():
            judged = judged_shares.get(value)
            if judged is not None and abs(judged - share) > gap:
                warnings.append(f"{attribute} = {value}: judged {judged:.3f} but {share:.3f} "
                                "on what was drawn")
    for name, error in truth.pose_error.items():
        rows.append([f"pose error of {name} (mean |drawn − requested|)",
                     _fmt(metrics.pose_error.get(name)), _fmt(error)])
    for label, judged_distance, true_distance in (
            ("identity within", metrics.identity_within, truth.identity_within),
            ("identity between", metrics.identity_between, truth.identity_between)):
        if true_distance is not None:
            rows.append([f"{label} (judge's embedding · drawn identity factors)",
                         _fmt(judged_distance), _fmt(true_distance)])
    kept = truth.attributes_kept
    if kept:
        rows.append(["share of noises whose drawn attributes stay the same across the sweep", "",
                     " ".join(f"{a}={v:.2f}" for a, v in kept.items())])
    agreement = truth.judge_agreement
    if agreement:
        rows.append(["judge agreement with the truth", "",
                     " ".join(f"{a}={v:.3f}" for a, v in agreement.items())])
    blocks: list = [Heading(2, "Ground truth"),
                    Text("This world's generator says what it drew: the same figures computed "
                         "from that truth instead of the judge.")]
    blocks.append(Table(rows))
    blocks += [Warning(f"{w} — the flow may be fooling its judge") for w in warnings]
    return blocks


def histogram_png(title: str, values: Sequence[str], groups: Mapping[str, Sequence[float]],
                  target: dict[str, float] | None = None) -> bytes:
    """Return PNG bytes of a bar chart of shares per value, one bar per group, target marked."""
    from energyql.charts import bar_chart, png_bytes

    marks = [target.get(v, 0.0) for v in values] if target else None
    return png_bytes(bar_chart(title, list(values), groups, target=marks, y_label="share",
                               x_label=f"{title} (as read by the attribute model)"))


def _stage_blocks(view: StageView, metrics: RunMetrics, asked: Asked,
                  threshold: float) -> list:
    blocks: list = [Heading(3, f"Stage {view.index}: {code(view.source)}")]
    if view.panels:
        blocks.append(Figures([(label, str(path)) for label, path in view.panels],
                              view.caption or "Same noise in every panel."))
    if view.metrics is not None:
        own = RunMetrics.of(view.metrics)
        previous = RunMetrics.of(view.previous) if view.previous is not None else None
        before = previous if previous is not None else _base(metrics)
        label = "base" if previous is None else f"stage {view.index - 1}"
        rows = [["figure", label, f"stage {view.index}"]]
        for key, value in own.kl_to_target.items():
            rows.append([f"KL to target ({key})", _fmt(before.kl_to_target.get(key)),
                         _fmt(value)])
        for key, value in own.predicate_share.items():
            rows.append([f"share satisfying {key}",
                         _fmt(before.predicate_share.get(key)), _fmt(value)])
        for attribute, shares in own.attributes.items():
            old = before.attributes.get(attribute, {})
            rows.append([f"{attribute}", " ".join(f"{v}={s:.2f}" for v, s in old.items()) or "—",
                         " ".join(f"{v}={s:.2f}" for v, s in shares.items())])
        blocks.append(Table(rows))
        for note in collateral_drift_notes(own, asked, previous=previous,
                                           threshold=threshold):
            blocks.append(Warning(f"stage {view.index} against {label}: {note}"))
    return blocks


def slider_png(name: str, rows: Sequence[SliderRow | Mapping[str, Any]]) -> bytes:
    """Requested against achieved (judged, true) along one slider, and ESS/N per setting."""
    from energyql.charts import line_chart, png_bytes, stack

    sweep = [row if isinstance(row, SliderRow) else SliderRow.from_dict(row) for row in rows]
    series: dict[str, list[tuple[float, float]]] = {}
    keys = list(sweep[0].requested) if sweep else []
    columns = (("requested", [r.requested for r in sweep]), ("judged", [r.judged for r in sweep]),
               ("true", [r.truth for r in sweep]))
    for key in keys:
        for label, column in columns:
            points = [(r.value, share) for r, at in zip(sweep, column)
                      if (share := at.get(key)) is not None]
            if points:
                series[f"{label} {key}" if len(keys) > 1 else label] = points
    if not keys:  # a weight slider: the predicate shares it moves
        for shares, label in (([r.predicate_share for r in sweep], "judged"),
                              ([r.truth_predicate_share for r in sweep], "true")):
            for text in _predicates_along(shares):
                series[f"{label} {text}"] = [(r.value, at[text]) for r, at in zip(sweep, shares)
                                             if text in at]
    ess = {"ESS/N": [(r.value, r.ess_fraction) for r in sweep if r.ess_fraction is not None]}
    title = f"slider {name}: requested and achieved" if keys else \
        f"slider {name}: shares of the predicates it weights"
    pictures = [line_chart(title, series, x_label=name, y_label="share"),
                line_chart(f"slider {name}: ESS/N of the flow at each setting", ess,
                           x_label=name, y_label="ESS/N")]
    return png_bytes(stack(pictures, columns=2))


def _predicates_along(shares: Sequence[Mapping[str, float]]) -> list[str]:
    """The predicates measured at any setting of a sweep (a weight at 0 drops its term)."""
    return list(dict.fromkeys(text for at in shares for text in at if text != "all"))


def slider_blocks(directory: Path, metrics: RunMetrics | Mapping[str, Any]) -> list:
    """The report's slider section: where the headline figures were measured, then per
    slider a plot and a table of requested against achieved along its range."""
    metrics = RunMetrics.of(metrics)
    sweeps, setting = metrics.sliders, metrics.setting
    if not sweeps and not setting:
        return []
    blocks: list = [Heading(2, "Sliders")]
    if setting:
        where = ", ".join(f"{k}={_fmt(v)}" for k, v in setting.items())
        blocks.append(Text(f"The figures above are at {code(where)} (sliders not set sit at "
                           f"their middles); {code('energyql eval RUN --set NAME=VALUE')} "
                           "measures another setting."))
    for name, rows in sweeps.items():
        picture = f"slider_{name}.png"
        write_bytes(directory / picture, slider_png(name, rows))
        blocks.append(Heading(3, f"slider {name}"))
        blocks.append(Figures([(f"slider {name}", picture)],
                              "requested against achieved along the slider, and ESS/N"))
        keys = list(rows[0].requested) if rows else []
        shares = [] if keys else _predicates_along([r.predicate_share for r in rows])
        table = [[name, *(f"{label} {k}" for k in keys for label in
                          ("requested", "judged", "true")),
                  *(f"{label} share {t}" for t in shares for label in ("judged", "true")),
                  "ESS/N", "KL̂"]]
        for row in rows:
            table.append([_fmt(row.value),
                          *(_fmt(column.get(k)) for k in keys
                            for column in (row.requested, row.judged, row.truth)),
                          *(_fmt(column.get(t)) for t in shares
                            for column in (row.predicate_share, row.truth_predicate_share)),
                          _fmt(row.ess_fraction), _fmt(row.kl)])
        blocks.append(Table(table))
    return blocks


def report_blocks(directory: Path, manifest: Manifest, metrics: RunMetrics | Mapping[str, Any],
                  *, stages: Sequence[StageView] | None = None,
                  drift_threshold: float = DRIFT_THRESHOLD) -> list:
    """Return the report's blocks; writes a ``hist_<attribute>.png`` per attribute."""
    metrics = RunMetrics.of(metrics)
    asked = what_was_asked(manifest)
    base = _base(metrics)
    generator = manifest.generator
    blocks: list = [
        Heading(1, "energyql run report"),
        Text(f"Expression: {code(manifest.source or manifest.canonical)}"),
        Text(f"Canonical: {code(manifest.canonical)}"),
        Text(f"Generator: {code(generator.id or '?')} (weights "
             f"{code(generator.weights_digest[:12])}) · samples judged: "
             f"{_count(metrics.samples)} controlled, {_count(base.samples)} base"),
    ]
    links = [(label, name) for label, name in (("training log (one JSON object per step)",
                                                LOG_NAME), ("training curves", CURVES_NAME),
                                               ("all figures", "metrics.json"))
             if (directory / name).exists()]
    if links:
        blocks.append(Links(links))

    if metrics.evaluation_error:
        blocks.append(Warning(f"evaluation failed: {metrics.evaluation_error}; the figures "
                              "below are what was measured before it"))
    blocks.append(Heading(2, "Headline figures"))
    blocks.append(Table(headline_rows(metrics)))
    blocks += [Warning(note) for note in closeness_notes(manifest, metrics)]
    stage_records = manifest.stages
    context = stage_records[-1].context if stage_records else ()
    if metrics.pose_error or context:
        sweep = "samples.png" if (directory / "samples.png").exists() else None
        if sweep:
            blocks.append(Figures([("sweep", sweep)], _sweep_caption(context)))
    blocks += slider_blocks(directory, metrics)
    blocks += truth_blocks(metrics)
    notes = collateral_drift_notes(metrics, asked, threshold=drift_threshold)
    if notes:
        blocks.append(Heading(3, "Collateral drift"))
        blocks += [Warning(note) for note in notes]
    for stage in stage_records:
        for warning in stage.warnings:
            prefix = f"stage {stage.index}: "  # the trainer's warnings name their stage
            blocks.append(Warning(warning if warning.startswith(prefix) else prefix + warning))

    blocks.append(Heading(2, "Stages"))
    rows = [["stage", "expression", "steps", "seconds", "final loss",
             "moment fit (max error, ESS)"]]
    for stage in stage_records:
        fit = stage.fits[-1] if stage.fits else None
        train = stage.train
        rows.append([str(stage.index), code(stage.source),
                     _fmt(train.steps if train else None), _fmt(train.seconds if train else None),
                     _fmt(stage.final_loss),
                     f"{fit.max_moment_error}, {fit.ess:.0f}/{fit.samples}" if fit else "—"])
    blocks.append(Table(rows))
    views = list(stages) if stages is not None else stage_noise_views(manifest, directory)
    for view in views:
        blocks += _stage_blocks(view, metrics, asked, drift_threshold)

    if metrics.attributes:
        blocks.append(Heading(2, "Attributes"))
        blocks.append(Text("Shares of each value as read by the attribute model; the red mark "
                           "is what the program asked for, where it asked."))
    previous = RunMetrics.of(views[-1].previous) \
        if views and views[-1].previous is not None else None
    for attribute, shares in metrics.attributes.items():
        values = list(shares)
        groups = {"base": [base.attributes.get(attribute, {}).get(v, 0.0) for v in values]}
        if previous is not None:
            groups[f"stage {views[-1].index - 1}"] = [
                previous.attributes.get(attribute, {}).get(v, 0.0) for v in values]
        groups["controlled"] = [shares[v] for v in values]
        target = asked.targets.get(attribute)
        name = f"hist_{attribute}.png"
        write_bytes(directory / name, histogram_png(attribute, values, groups, target))
        rows = [["value", *groups, *(["target"] if target else [])]]
        for i, v in enumerate(values):
            rows.append([v, *(f"{g[i]:.3f}" for g in groups.values()),
                         *([_fmt(target.get(v, 0.0))] if target else [])])
        blocks += [Heading(3, attribute), Figures([(attribute, name)]), Table(rows)]
    return blocks


# ---------------------------------------------------------------------------------------------
# renderers

def _md_cell(cell: str) -> str:
    """A table cell as Markdown: as :func:`_md_inline`, with '|' escaped inside code too."""
    return "".join(_md_code(part).replace("|", "\\|") if is_code
                   else _MD_SPECIAL.sub(r"\\\1", part) for is_code, part in _parts(cell))


def _md_table(rows: list[list[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(_md_cell(c) for c in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(cell) for cell in r) + " |" for r in body]
    return "\n".join(lines)


def render_markdown(blocks: list) -> str:
    """Return the blocks as Markdown (images and files linked by relative path)."""
    out = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + _md_inline(block.text))
        elif isinstance(block, Text):
            out.append(_md_inline(block.text))
        elif isinstance(block, Table):
            out.append(_md_table(block.rows))
        elif isinstance(block, Figures):
            if len(block.items) > 1:  # side by side: a one-row table with the labels on top
                images = [f"![{_md_inline(caption)}]({_md_path(path)})".replace("|", "\\|")
                          for caption, path in block.items]
                text = "\n".join([_md_table([[caption for caption, _ in block.items]]),
                                  "| " + " | ".join(images) + " |"])
            else:
                text = " ".join(f"![{_md_inline(caption)}]({_md_path(path)})"
                                for caption, path in block.items)
            out.append(text + (f"\n\n*{_md_inline(block.caption)}*" if block.caption else ""))
        elif isinstance(block, Warning):
            out.append(f"> **warning:** {_md_inline(block.text)}")
        elif isinstance(block, Links):
            out.append("Files: " + " · ".join(f"[{_md_inline(label)}]({_md_path(name)})"
                                              for label, name in block.items))
    return "\n\n".join(out) + "\n"


_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d22;
       max-width: 1100px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.7em; margin-bottom: .3em; }
h2 { border-bottom: 1px solid #ddd; margin-top: 1.6em; }
code { background: #f2f2f5; padding: 0 .25em; border-radius: 3px; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #d8d8de; padding: .25em .6em; text-align: left; }
th { background: #f4f4f7; } td:not(:first-child) { font-variant-numeric: tabular-nums; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.panels { display: grid; grid-template-columns: repeat(auto-fit, minmax(200px, 1fr)); gap: 1em; }
figure { margin: 0; } figcaption { font-weight: 600; text-align: center; }
figure img { image-rendering: pixelated; max-width: 100%; border: 1px solid #e3e3e8; }
.caption { color: #555; font-style: italic; margin-top: .2em; }
.warning { background: #fff4e0; border-left: 4px solid #e08a00; padding: .4em .8em;
           margin: .4em 0; }
"""


def _inline(text: str) -> str:
    """Block text as HTML: everything escaped, code spans in <code>."""
    return "".join(f"<code>{html.escape(part)}</code>" if is_code else html.escape(part)
                   for is_code, part in _parts(text))


def _data_uri(path: Path) -> str | None:
    if not path.is_file():
        return None
    kind = "png" if path.suffix.lower() == ".png" else path.suffix.lower().lstrip(".")
    return f"data:image/{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def render_html(blocks: list, directory: Path) -> str:
    """Return the blocks as one self-contained HTML page (every image a data URI)."""
    title = next((b.text for b in blocks if isinstance(b, Heading)), "energyql report")
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{_inline(block.text)}</h{block.level}>")
        elif isinstance(block, Text):
            body.append(f"<p>{_inline(block.text)}</p>")
        elif isinstance(block, Table):
            header, *rows = block.rows
            body.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header)
                        + "</tr></thead><tbody>"
                        + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row)
                                  + "</tr>" for row in rows) + "</tbody></table>")
        elif isinstance(block, Figures):
            figures = []
            for caption, name in block.items:
                path = Path(name) if Path(name).is_absolute() else directory / name
                uri = _data_uri(path)
                image = f'<img src="{uri}" alt="{html.escape(caption)}">' if uri else \
                    f"<p>(missing: {html.escape(str(name))})</p>"
                figures.append(f"<figure>{image}<figcaption>{_inline(caption)}</figcaption>"
                               "</figure>")
            kind = "panels" if len(figures) > 1 else "figures"  # panels share the width
            body.append(f'<div class="{kind}">' + "".join(figures) + "</div>")
            if block.caption:
                body.append(f'<p class="caption">{_inline(block.caption)}</p>')
        elif isinstance(block, Warning):
            body.append(f'<div class="warning"><strong>warning:</strong> {_inline(block.text)}'
                        "</div>")
        elif isinstance(block, Links):
            links = " · ".join(f'<a href="{html.escape(name)}">{_inline(label)}</a>'
                               for label, name in block.items)
            body.append(f"<p>Files: {links}</p>")
            curves = next((name for _, name in block.items if name == CURVES_NAME), None)
            uri = _data_uri(directory / curves) if curves else None
            if uri:
                body.append(f'<details open><summary>Training curves</summary>'
                            f'<img src="{uri}" alt="training curves" style="max-width:100%">'
                            "</details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_inline(title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_report(directory: str | Path, manifest: Manifest,
                 metrics: RunMetrics | Mapping[str, Any], *,
                 stages: Sequence[StageView] | None = None,
                 drift_threshold: float = DRIFT_THRESHOLD) -> Path:
    """Write ``report.md``, ``report.html`` and ``hist_<attribute>.png`` into ``directory``.

    Arguments:
        directory: the run's directory (images are looked up and written there).
        manifest: the artifact's manifest (expression, generator, per-stage records).
        metrics: the final sampler's evaluation figures (``metrics.json``, as a dict or
            its :class:`~energyql.metrics.RunMetrics`).
        stages: one :class:`StageView` per stage to show; default: the ``stage<k>.png``
            files ``save_stage_grids`` wrote, else ``base.png`` and ``samples.png``.
        drift_threshold: how far (share, or TV) an unmentioned attribute may move before the
            report flags it in words.

    Returns the path of ``report.md``.
    """
    directory = Path(directory)
    blocks = report_blocks(directory, manifest, metrics, stages=stages,
                           drift_threshold=drift_threshold)
    write_text(directory / "report.html", render_html(blocks, directory))
    return write_text(directory / "report.md", render_markdown(blocks))


__all__ = [
    "StageView",
    "collateral_drift_notes",
    "grid_png",
    "headline_rows",
    "histogram_png",
    "render_html",
    "render_markdown",
    "report_blocks",
    "save_grid",
    "save_stage_grids",
    "stage_noise_views",
    "what_was_asked",
    "write_report",
]
