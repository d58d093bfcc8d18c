"""The artifact manifest as typed records: written and read here, and nowhere else.

``manifest.json`` is read as if an attacker wrote it: :meth:`Manifest.from_dict` checks every
field's type, bounds every size before anything is allocated from it, and refuses unknown keys
(a key this code does not know may carry meaning it would silently drop). Opaque records
(``metrics``, ``controls``, a stage's ``warm_start`` and train settings) are checked to be JSON
objects of plain values and are otherwise kept as written. Every failure is an
:class:`~energyql.errors.ArtifactError` naming the file and the field.

Bounds on what a manifest may ask to be built (generous for real artifacts: PromptGen's
StyleGAN2 flows use 8-16 blocks of width 256-512 over 512 latent dimensions):

    flow blocks <= 64, width <= 8192, dim <= 16384 (conv flows and generator latents: 2**20),
    conv levels <= 6, context entries <= 64, Fourier features per entry <= 16, stages <= 64,
    every stage's flow together <= 2**27 floats (512 MiB), λ entries per constraint <= 65536,
    |λ| and context bounds <= 1e6, text fields <= 65536 characters

and on load each flow's ``dim`` must equal the latent size of the generator it sits on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, NoReturn

from energyql.errors import ArtifactError, UsageError
from energyql.generators.options import MAX_TEXT as MAX_OPTION_TEXT
from energyql.generators.options import RECORDED, check_options
from energyql.generators.registry import own_options
from energyql.io import climbs_out, dumps_strict, is_system_path, loads_strict
from energyql.lang.graph import RESTORE

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

MAX_BLOCKS = 64
MAX_WIDTH = 8192
MAX_DIM = 1 << 14
# Image-shaped latents (conv flows, diffusion noise): a conv flow's size grows with its pixels,
# not their square, so it may cover 4 x 512 x 512 entries.
MAX_IMAGE_DIM = 1 << 20
MAX_LEVELS = 6
FLOW_KINDS = ("dense", "conv", "spline")
#: Bins per spline of a spline flow (energyql.flows.SPLINE_BINS; the allocation estimate).
SPLINE_BINS = 8
# Floats a manifest's flows may ask for, all stages together (512 MiB in float32): subnets
# and the dim x dim rotation of every block.
MAX_FLOW_FLOATS = 1 << 27
MAX_CONTEXT = 64
MAX_FREQUENCIES = 16  # Fourier features per context entry (energyql.flows reads it here)
MAX_STAGES = 64
MAX_LAMBDA = 1 << 16
# |λ| and context ranges beyond this overflow float32 arithmetic downstream (exp(λ·φ),
# high - low); trained values stay within a few thousand.
MAX_MAGNITUDE = 1e6
MAX_TEXT = 1 << 16
MAX_CLAMP = 100.0

Scalar = bool | int | float | str | None


class _Reader:
    """Typed access to one JSON object, raising ArtifactError with ``file: field`` on failure."""

    def __init__(self, data: Any, where: str, origin: str):
        self.where, self.origin = where, origin
        if not isinstance(data, dict):
            self.fail(f"must be a JSON object, not {_kind(data)}")
        self.data: dict[str, Any] = data

    def fail(self, problem: str, key: str | None = None) -> NoReturn:
        name = f"{self.where}.{key}" if key and self.where else (key or self.where or "top level")
        raise ArtifactError(f"{self.origin}: field '{name}' {problem}",
                            hint="the manifest is damaged or was not written by energyql; "
                                 "train the artifact again with `energyql run`")

    def only(self, *allowed: str) -> None:
        unknown = sorted(set(self.data) - set(allowed))
        if unknown:
            self.fail("is not a field of a format-1 manifest", unknown[0])

    def child(self, key: str) -> _Reader:
        return _Reader(self.required(key), f"{self.where}.{key}" if self.where else key,
                       self.origin)

    def required(self, key: str) -> Any:
        if key not in self.data:
            self.fail("is missing", key)
        return self.data[key]

    def text(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default) if default is not None else self.required(key)
        if not isinstance(value, str):
            self.fail(f"must be a string, not {_kind(value)}", key)
        if len(value) > MAX_TEXT:
            self.fail(f"is longer than {MAX_TEXT} characters", key)
        return value

    def integer(self, key: str, low: int, high: int, default: int | None = None) -> int:
        value = self.data.get(key, default) if default is not None else self.required(key)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"must be an integer, not {_kind(value)}", key)
        if not low <= value <= high:
            self.fail(f"is {value}, outside {low}..{high}", key)
        return value

    def number(self, key: str, default: float | None = None, *, optional: bool = False,
               low: float = -math.inf, high: float = math.inf) -> float | None:
        if optional and self.data.get(key) is None:
            return None
        value = self.data.get(key, default) if default is not None else self.required(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"must be a number, not {_kind(value)}", key)
        if not math.isfinite(value) or not low <= value <= high:
            self.fail(f"is {value}, not a finite number in {low}..{high}", key)
        return float(value)

    def real(self, key: str, default: float | None = None, *, low: float = -math.inf,
             high: float = math.inf) -> float:
        """A required (or defaulted) finite number."""
        value = self.number(key, default, low=low, high=high)
        return 0.0 if value is None else value

    def items(self, key: str, limit: int, default: list[Any] | None = None) -> list[Any]:
        value = self.data.get(key, default) if default is not None else self.required(key)
        if not isinstance(value, list):
            self.fail(f"must be a list, not {_kind(value)}", key)
        if len(value) > limit:
            self.fail(f"has {len(value)} entries, more than {limit}", key)
        return value

    def plain(self, key: str, *, optional: bool = True) -> dict[str, Any] | None:
        """A JSON object of plain values (nested objects and lists allowed), kept as is."""
        value = self.data.get(key) if optional else self.required(key)
        if value is None and optional:
            return None
        if not isinstance(value, dict):
            self.fail(f"must be a JSON object, not {_kind(value)}", key)
        _check_plain(value, lambda problem: self.fail(problem, key))
        return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null", int: "an integer", float: "a number"}.get(type(value),
                                                                          type(value).__name__)


def _check_plain(value: Any, fail: Callable[[str], NoReturn], depth: int = 0) -> None:
    if depth > 16:
        fail("is nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        fail(f"holds a non-finite number ({value})")
    if isinstance(value, dict):
        for v in value.values():
            _check_plain(v, fail, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_plain(v, fail, depth + 1)


def _lambdas(reader: _Reader, key: str) -> dict[str, tuple[float, ...]] | None:
    value = reader.data.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        reader.fail(f"must be a JSON object of constraint -> list of numbers, not {_kind(value)}",
                    key)
    out = {}
    for text, values in value.items():
        if not isinstance(values, list) or len(values) > MAX_LAMBDA:
            reader.fail(f"must be a list of at most {MAX_LAMBDA} numbers", f"{key}.{text}")
        for v in values:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                reader.fail(f"holds {v!r}, not a finite number", f"{key}.{text}")
            if abs(v) > MAX_MAGNITUDE:
                reader.fail(f"holds {v!r}, beyond ±{MAX_MAGNITUDE:g}", f"{key}.{text}")
        out[text] = tuple(float(v) for v in values)
    return out


#: A λ grid's bounds: settings (points ** sliders) and λ values per setting.
MAX_GRID_SETTINGS = 4096


@dataclass(frozen=True)
class LambdaGridRecord:
    """λ of a slider stage's constraints on its grid of settings (see energyql.energies.sliders).

    ``sliders`` names the grid's axes, ``points`` the settings per axis (the last slider
    varies fastest), ``lam`` the packed λ at each setting.
    """

    sliders: tuple[str, ...]
    points: int
    lam: tuple[tuple[float, ...], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"sliders": list(self.sliders), "points": self.points,
                "lambda": [list(row) for row in self.lam]}

    @classmethod
    def from_reader(cls, r: _Reader) -> LambdaGridRecord:
        r.only("sliders", "points", "lambda")
        sliders = r.items("sliders", MAX_CONTEXT)
        if not sliders or not all(isinstance(n, str) and n.isidentifier() for n in sliders):
            r.fail("must be a non-empty list of slider names", "sliders")
        points = r.integer("points", 2, 64)
        rows = r.items("lambda", MAX_GRID_SETTINGS)
        if points ** len(sliders) != len(rows):
            r.fail(f"has {len(rows)} rows, but {points} points on {len(sliders)} slider(s) make "
                   f"{points ** len(sliders)}", "lambda")
        width = None
        for i, row in enumerate(rows):
            if not isinstance(row, list) or len(row) > MAX_LAMBDA or (
                    width is not None and len(row) != width):
                r.fail(f"must be rows of one length, at most {MAX_LAMBDA} numbers",
                       f"lambda[{i}]")
            width = len(row)
            for v in row:
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not \
                        math.isfinite(v) or abs(v) > MAX_MAGNITUDE:
                    r.fail(f"holds {v!r}, not a finite number within ±{MAX_MAGNITUDE:g}",
                           f"lambda[{i}]")
        return cls(tuple(sliders), points, tuple(tuple(float(v) for v in row) for row in rows))


# The options a manifest records: those that shape the generator, declared with their kinds
# and ranges in energyql.generators.options (the one table every loader checks with).
GENERATOR_OPTIONS = RECORDED


def check_generator_id(value: str, fail: Callable[[str], NoReturn]) -> str:
    """Return a manifest's generator id if it names no system file and plays no path tricks."""
    if not value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        fail("must be a non-empty name without control characters")
    path = value.split(":", 1)[1] if ":" in value else value
    if climbs_out(path):
        fail(f"'{value}' climbs out of its folder ('..')")
    if is_system_path(path):
        fail(f"'{value}' names a system file, not a generator")
    return value


@dataclass(frozen=True)
class GeneratorRecord:
    """Which generator an artifact was trained on: its id, weights digest, latent size, world."""

    id: str
    weights_digest: str = ""
    latent_dim: int = 0
    catalog: str = ""
    # Loader options that shape the generator (diffusion steps, truncation, a fixed class).
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "weights_digest": self.weights_digest,
               "latent_dim": self.latent_dim, "catalog": self.catalog}
        if self.options:
            out["options"] = dict(self.options)
        return out

    @classmethod
    def from_reader(cls, r: _Reader) -> GeneratorRecord:
        r.only("id", "weights_digest", "latent_dim", "catalog", "options")
        ident = check_generator_id(r.text("id"), lambda problem: r.fail(problem, "id"))
        digest = r.text("weights_digest", "") if r.data.get("weights_digest") is not None else ""
        if len(digest) > 256 or any(ord(c) < 32 for c in digest):
            r.fail("must be a digest of at most 256 printable characters", "weights_digest")
        options = r.plain("options") or {}
        # A registered generator's own options (a world's prompt) are recorded too, and
        # judged by their own declarations.
        own = own_options(ident) if options else ()
        recorded = tuple(dict.fromkeys((*GENERATOR_OPTIONS,
                                        *(o.name for o in own if o.recorded))))
        for key, value in options.items():
            # Only options that shape the model travel in a manifest: never a path to load.
            if key not in recorded:
                r.fail(f"names the option '{key}'; a manifest may record only "
                       + ", ".join(recorded), "options")
            # Text up to a prompt's length (a class name, a prompt); its declaration judges more.
            if not isinstance(value, (str, int, float)) or (isinstance(value, str)
                                                             and len(value) > MAX_OPTION_TEXT):
                r.fail(f"'{key}' must be a number or a string of at most {MAX_OPTION_TEXT:,} "
                       "characters", "options")
            try:
                check_options(None, {key: value}, own=own)
            except UsageError as error:
                r.fail(f"'{key}': {error.message}", "options")
        return cls(ident, digest, r.integer("latent_dim", 0, MAX_IMAGE_DIM, 0),
                   r.text("catalog", ""), dict(options))


@dataclass(frozen=True)
class FlowRecord:
    """The shape of one stage's flow (the fields of :class:`energyql.flows.FlowConfig`).

    ``kind``, ``shape`` and ``levels`` describe a conv flow over an image-shaped latent; a
    dense flow's record leaves them out, as every manifest did before conv flows existed.
    """

    dim: int
    context_dim: int = 0
    blocks: int = 8
    width: int = 256
    clamp: float = 2.0
    seed: int = 0
    kind: str = "dense"
    shape: tuple[int, ...] = ()
    levels: int = 0
    frequencies: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def condition_dim(self) -> int:
        """The context entries the subnets see (raw values and their Fourier features)."""
        return self.context_dim * (1 + 2 * self.frequencies)

    def floats(self) -> int:
        """Return about how many floats a flow of this shape allocates (subnets, rotations)."""
        if self.kind == "conv":
            return self._conv_floats()
        if self.kind == "spline":  # a 2-layer net reads one half, sets the other's knots;
            kept = self.dim // 2     # the kept half's knots are read from the context alone
            knots = 3 * SPLINE_BINS - 1
            return self.blocks * ((kept + self.condition_dim) * self.width
                                  + self.width * self.width
                                  + self.width * (self.dim - kept) * knots
                                  + (1 + self.condition_dim) * kept * knots)
        per_block = ((self.dim + self.condition_dim) * self.width + self.width * self.width
                     + self.width * self.dim + self.dim * self.dim)
        return self.blocks * per_block

    def _conv_floats(self) -> int:
        # Per block: 3x3 conv in, 1x1 conv, 3x3 conv out, and a channel rotation.
        channels = self.shape[0] if self.shape else self.dim
        total = 0
        for _ in range(max(self.levels, 1)):
            if self.levels:
                channels *= 4
            half = channels // 2
            per_block = (9 * (channels - half + self.condition_dim) * self.width
                         + self.width * self.width + 9 * self.width * 2 * half
                         + 2 * channels * channels)
            total += self.blocks * per_block
            channels -= half
        return total

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"dim": self.dim, "context_dim": self.context_dim,
                               "blocks": self.blocks, "width": self.width, "clamp": self.clamp,
                               "seed": self.seed}
        if self.frequencies:
            out["frequencies"] = self.frequencies
        if self.kind == "spline":
            out["kind"] = self.kind
        elif self.kind != "dense":
            out.update(kind=self.kind, shape=list(self.shape), levels=self.levels)
        return out

    @classmethod
    def from_reader(cls, r: _Reader) -> FlowRecord:
        r.only("dim", "context_dim", "blocks", "width", "clamp", "seed", "kind", "shape",
               "levels", "frequencies")
        kind = r.text("kind", "dense")
        if kind not in FLOW_KINDS:
            r.fail(f"is '{kind[:40]}', not one of " + ", ".join(FLOW_KINDS), "kind")
        if kind in ("dense", "spline"):
            if "shape" in r.data or "levels" in r.data:
                r.fail("is a field of conv flows only", "shape" if "shape" in r.data
                       else "levels")
            dim, shape, levels = r.integer("dim", 1, MAX_DIM), (), 0
        else:
            dim = r.integer("dim", 1, MAX_IMAGE_DIM)
            sides = r.items("shape", 3)
            if len(sides) != 3 or any(isinstance(s, bool) or not isinstance(s, int)
                                      or not 1 <= s <= MAX_IMAGE_DIM for s in sides):
                r.fail(f"must be 3 positive integers (C, H, W) of at most {MAX_IMAGE_DIM}",
                       "shape")
            shape = tuple(sides)
            levels = r.integer("levels", 0, MAX_LEVELS, 0)
            problem = _conv_shape_problem(dim, shape, levels)
            if problem:
                r.fail(f"does not fit: {problem}", "shape")
        return cls(dim=dim,
                   context_dim=r.integer("context_dim", 0, MAX_CONTEXT, 0),
                   blocks=r.integer("blocks", 1, MAX_BLOCKS, 8),
                   width=r.integer("width", 1, MAX_WIDTH, 256),
                   clamp=r.real("clamp", 2.0, low=0.0, high=MAX_CLAMP),
                   seed=r.integer("seed", -(2**63), 2**63 - 1, 0),
                   kind=kind, shape=shape, levels=levels,
                   frequencies=r.integer("frequencies", 0, MAX_FREQUENCIES, 0))


def _conv_shape_problem(dim: int, shape: tuple[int, ...], levels: int) -> str:
    """Return why a conv flow cannot have this shape ('' if it can); mirrors
    ``energyql.flows.conv_shape_problem`` without importing torch."""
    channels, height, width = shape
    if channels * height * width != dim:
        return f"shape {list(shape)} holds {channels * height * width} entries, not dim={dim}"
    if height % 2**levels or width % 2**levels:
        return f"{levels} squeezes need sides divisible by {2**levels}, not {height}x{width}"
    if levels == 0 and channels < 2:
        return "a one-channel latent needs levels >= 1"
    return ""


@dataclass(frozen=True)
class ContextRecord:
    """One entry of a conditional flow's context: control, parameter and range."""

    control: str
    name: str
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return {"control": self.control, "name": self.name, "low": self.low, "high": self.high}

    @classmethod
    def from_reader(cls, r: _Reader) -> ContextRecord:
        r.only("control", "name", "low", "high")
        low = r.real("low", low=-MAX_MAGNITUDE, high=MAX_MAGNITUDE)
        high = r.real("high", low=-MAX_MAGNITUDE, high=MAX_MAGNITUDE)
        if not low < high:
            r.fail(f"is {high}, not above low ({low})", "high")
        return cls(r.text("control"), r.text("name"), low, high)


@dataclass(frozen=True)
class FitRecord:
    """One λ fit during training: when, its ESS, and each constraint's λ and moments."""

    step: int
    ess: float
    samples: int
    max_moment_error: float
    flow_max_moment_error: float | None = None
    constraints: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "ess": self.ess, "samples": self.samples,
                "max_moment_error": self.max_moment_error,
                "flow_max_moment_error": self.flow_max_moment_error,
                "constraints": dict(self.constraints)}

    @classmethod
    def from_reader(cls, r: _Reader) -> FitRecord:
        r.only("step", "ess", "samples", "max_moment_error", "flow_max_moment_error",
               "constraints")
        return cls(r.integer("step", 0, 2**62), r.real("ess", low=0.0),
                   r.integer("samples", 0, 2**62), r.real("max_moment_error"),
                   r.number("flow_max_moment_error", optional=True),
                   r.plain("constraints") or {})


@dataclass(frozen=True)
class TrainRecord:
    """A stage's training settings (the TrainConfig fields) and what training took."""

    settings: Mapping[str, Scalar]
    seconds: float = 0.0
    skipped_steps: int = 0
    # Images the generator decoded for the stage (λ fits, the start, steps), and how many of
    # them were back-propagated through; None in artifacts written before they were counted.
    images: int | None = None
    images_backward: int | None = None

    @property
    def steps(self) -> int:
        return int(self.settings.get("steps") or 0)

    @property
    def batch(self) -> int:
        return int(self.settings.get("batch") or 0)

    @property
    def amp(self) -> bool:
        return bool(self.settings.get("amp"))

    def to_dict(self) -> dict[str, Any]:
        counts = {k: v for k, v in (("images", self.images),
                                    ("images_backward", self.images_backward)) if v is not None}
        return {**self.settings, "seconds": self.seconds, "skipped_steps": self.skipped_steps,
                **counts}

    _OWN: ClassVar[tuple[str, ...]] = ("seconds", "skipped_steps", "images", "images_backward")
    # (low, high or None, low excluded) of the settings checked when read.
    _NUMBERS: ClassVar[dict[str, tuple[float, float | None, bool]]] = {
        "temper": (0.0, None, True), "forward_weight": (0.0, None, False),
        "chain_weight": (0.0, None, False), "score_share": (0.0, 1.0, False),
        "smooth_score_share": (0.0, 1.0, False), "defensive": (0.0, 1.0, False),
        "replay_weight": (0.0, None, False)}

    @classmethod
    def from_reader(cls, r: _Reader) -> TrainRecord:
        settings = {k: v for k, v in r.data.items() if k not in cls._OWN}
        for key, value in settings.items():
            if not isinstance(value, (bool, int, float, str, type(None))):
                r.fail(f"must be a plain value, not {_kind(value)}", key)
            if isinstance(value, float) and not math.isfinite(value):
                r.fail(f"is {value}, not a finite number", key)
        # The estimator's settings the report and a --from run read: numbers in their range
        # (a hand-edited temper of "hot" or -3 would be reported as a tempered target).
        for key, (low, high, low_open) in cls._NUMBERS.items():
            value = settings.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or value < low or (low_open and value == low) \
                    or (high is not None and value > high):
                r.fail(f"is {value!r}, not a number "
                       + (f"from {low:g} to {high:g}" if high is not None else
                          f"greater than {low:g}" if low_open else f"of at least {low:g}"), key)
        counts = {k: r.integer(k, 0, 2**62, 0) if k in r.data else None
                  for k in ("images", "images_backward")}
        return cls(settings, r.real("seconds", 0.0, low=0.0),
                   r.integer("skipped_steps", 0, 2**62, 0), **counts)


@dataclass(frozen=True)
class StageRecord:
    """One trained stage: its expression, flow shape, context, λ and training record.

    ``lam`` is the λ the flow trained with (the exact fit plus the feedback offset),
    ``lam_exact`` the importance-weighted fit alone: the target corrected samplers and
    evaluation aim at. ``targets`` (optional): the targets estimated when training for the
    stage's ``restore`` constraints (what ``debias(clip_bias)`` resolves to), by text. Stages
    inherited from a base that was a trained sampler carry only index, source, flow and
    context.
    """

    index: int
    source: str
    flow: FlowRecord
    context: tuple[ContextRecord, ...] = ()
    lam: Mapping[str, tuple[float, ...]] | None = None
    lam_exact: Mapping[str, tuple[float, ...]] | None = None
    train: TrainRecord | None = None
    fits: tuple[FitRecord, ...] = ()
    warm_start: Mapping[str, Any] | None = None
    warnings: tuple[str, ...] = ()
    final_loss: float | None = None
    targets: Mapping[str, tuple[float, ...]] | None = None
    #: ESS/N and KL̂ of the trained flow against the stage's exact target (its own samples).
    closeness: Mapping[str, Any] | None = None
    #: Slider stages with constraints: λ at a grid of settings (interpolated in between).
    lambda_grid: LambdaGridRecord | None = None

    def __post_init__(self) -> None:
        # The deferred targets of restore constraints (debias(clip_bias)) are estimated before
        # the first λ fit, which records them: that fit is where a trained stage's come from.
        if self.targets is None and self.fits:
            first = self.fits[0].constraints
            found = {text: tuple(float(v) for v in entry["target"])
                     for text, entry in first.items() if text.startswith(f"{RESTORE}(")
                     and isinstance(entry, Mapping) and isinstance(entry.get("target"), list)}
            object.__setattr__(self, "targets", found or None)

    @property
    def trained(self) -> bool:
        """Whether this record comes from training (not just inherited from a base sampler)."""
        return self.train is not None

    def exact_lambdas(self) -> Mapping[str, tuple[float, ...]]:
        """λ of the exact target per constraint text (``lambda`` in manifests without
        ``lambda_exact``, where it also holds the feedback offset)."""
        return self.lam_exact if self.lam_exact is not None else (self.lam or {})

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"index": self.index, "source": self.source,
                                  "flow": self.flow.to_dict(),
                                  "context": [c.to_dict() for c in self.context]}
        if not self.trained and self.lam is None and self.lam_exact is None:
            return record
        record.update({
            "lambda": {k: list(v) for k, v in (self.lam or {}).items()},
            "lambda_exact": {k: list(v) for k, v in (self.lam_exact or {}).items()},
            "train": self.train.to_dict() if self.train is not None else None,
            "fits": [f.to_dict() for f in self.fits],
            "warm_start": dict(self.warm_start) if self.warm_start is not None else None,
            "warnings": list(self.warnings),
            "final_loss": self.final_loss,
        })
        if self.targets is not None:
            record["targets"] = {k: list(v) for k, v in self.targets.items()}
        if self.closeness is not None:
            record["closeness"] = dict(self.closeness)
        if self.lambda_grid is not None:
            record["lambda_grid"] = self.lambda_grid.to_dict()
        return record

    @classmethod
    def from_reader(cls, r: _Reader) -> StageRecord:
        r.only("index", "source", "flow", "context", "lambda", "lambda_exact", "train", "fits",
               "warm_start", "warnings", "final_loss", "targets", "closeness", "lambda_grid")
        context = tuple(ContextRecord.from_reader(_Reader(c, f"{r.where}.context[{i}]", r.origin))
                        for i, c in enumerate(r.items("context", MAX_CONTEXT, [])))
        flow = FlowRecord.from_reader(r.child("flow"))
        if flow.context_dim != len(context):
            r.fail(f"has context_dim {flow.context_dim} but {len(context)} context entries",
                   "flow.context_dim")
        warnings = r.items("warnings", MAX_STAGES * 64, [])
        if not all(isinstance(w, str) for w in warnings):
            r.fail("must be a list of strings", "warnings")
        return cls(
            index=r.integer("index", 1, MAX_STAGES),
            source=r.text("source"),
            flow=flow,
            context=context,
            lam=_lambdas(r, "lambda"),
            lam_exact=_lambdas(r, "lambda_exact"),
            train=TrainRecord.from_reader(r.child("train")) if r.data.get("train") is not None
            else None,
            fits=tuple(FitRecord.from_reader(_Reader(f, f"{r.where}.fits[{i}]", r.origin))
                       for i, f in enumerate(r.items("fits", 1 << 20, []))),
            warm_start=r.plain("warm_start"),
            warnings=tuple(warnings),
            final_loss=r.number("final_loss", optional=True),
            targets=_lambdas(r, "targets"),
            closeness=r.plain("closeness"),
            lambda_grid=LambdaGridRecord.from_reader(r.child("lambda_grid"))
            if r.data.get("lambda_grid") is not None else None,
        )


@dataclass(frozen=True)
class Manifest:
    """What an artifact is: its expression, generator, stages, metrics and library version.

    Example:
        >>> m = Manifest.read("runs/red-circles")                         # doctest: +SKIP
        >>> m.canonical, m.generator.id, m.stages[-1].flow.blocks         # doctest: +SKIP
    """

    source: str
    canonical: str
    generator: GeneratorRecord
    stages: tuple[StageRecord, ...]
    metrics: Mapping[str, Any] = field(default_factory=dict)
    controls: Mapping[str, Any] | None = None
    energyql_version: str = ""
    format: int = FORMAT_VERSION
    #: sha256 of the flows file this manifest was committed with ("" in older artifacts).
    flows_sha256: str = ""

    def with_metrics(self, metrics: Mapping[str, Any]) -> Manifest:
        """Return this manifest with ``metrics`` recorded."""
        return replace(self, metrics=metrics)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": self.format,
            "energyql_version": self.energyql_version,
            "source": self.source,
            "canonical": self.canonical,
            "generator": self.generator.to_dict(),
            "stages": [s.to_dict() for s in self.stages],
            "metrics": dict(self.metrics),
        }
        if self.controls is not None:
            data["controls"] = dict(self.controls)
        if self.flows_sha256:
            data["flows_sha256"] = self.flows_sha256
        return data

    def to_json(self) -> str:
        """Return strict JSON (a non-finite number anywhere is an ArtifactError)."""
        return dumps_strict(self.to_dict(), what="the manifest") + "\n"

    @classmethod
    def from_dict(cls, data: Any, origin: str = MANIFEST) -> Manifest:
        """Return the manifest ``data`` describes, checked field by field (see module doc)."""
        r = _Reader(data, "", origin)
        version = r.data.get("format")
        if version != FORMAT_VERSION:
            r.fail(f"is {version!r}; this energyql reads format {FORMAT_VERSION}", "format")
        r.only("format", "energyql_version", "source", "canonical", "generator", "stages",
               "metrics", "controls", "flows_sha256")
        stages = tuple(StageRecord.from_reader(_Reader(s, f"stages[{i}]", origin))
                       for i, s in enumerate(r.items("stages", MAX_STAGES)))
        if not stages:
            r.fail("holds no stage; an artifact has at least one trained stage", "stages")
        if [s.index for s in stages] != list(range(1, len(stages) + 1)):
            r.fail("must number the stages 1, 2, ... in order", "stages")
        if sum(s.flow.floats() for s in stages) > MAX_FLOW_FLOATS:
            r.fail(f"describe flows of more than {MAX_FLOW_FLOATS} floats together "
                   "(blocks x width x dim too large)", "stages")
        manifest = cls(source=r.text("source"), canonical=r.text("canonical"),
                       generator=GeneratorRecord.from_reader(r.child("generator")),
                       stages=stages, metrics=r.plain("metrics") or {},
                       controls=r.plain("controls"),
                       energyql_version=r.text("energyql_version", ""),
                       flows_sha256=_digest(r, "flows_sha256"))
        _check_program_text(manifest, r)
        _check_lambda_sizes(manifest, r)
        return manifest

    @classmethod
    def read(cls, directory: str | Path) -> Manifest:
        """Return the checked manifest of the artifact in ``directory``."""
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise ArtifactError(f"'{directory}' is not an energyql artifact: {MANIFEST} is "
                                "missing", hint="pass the --out directory of an `energyql run`")
        try:
            if path.stat().st_size > 64 << 20:
                raise ArtifactError(f"{path}: the manifest is larger than 64 MiB",
                                    hint="the file is damaged or not an energyql manifest")
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ArtifactError(f"{path} cannot be read: {error.strerror or error}",
                                hint="check the file's permissions") from None
        except UnicodeDecodeError as error:
            raise ArtifactError(f"{path} is not valid JSON: {error}",
                                hint="the file is damaged; train the artifact again") from None
        try:
            # ValueError also covers integers too long to convert (a 5000-digit "size").
            data = loads_strict(text)
        except (ValueError, RecursionError) as error:
            first = (str(error).splitlines() or [type(error).__name__])[0]
            raise ArtifactError(f"{path} is not valid JSON: {first}",
                                hint="the file is damaged; train the artifact again") from None
        return cls.from_dict(data, str(path))


def _check_program_text(manifest: Manifest, r: _Reader) -> None:
    """Refuse a manifest whose texts disagree about the program it holds.

    The canonical text must be canonical (it prints back as itself: no comment, no alias),
    the stages' texts must join to it, and the source must compile to it. Stages added with
    ``--from`` build on the canonical text, so one that hides a comment or a second stage
    would make them train another program than the one recorded. A world this installation
    does not know is left unchecked (its names cannot be resolved).
    """
    from energyql.catalog import CATALOGS
    from energyql.errors import EnergyQLError
    from energyql.lang.api import compile as compile_program

    if manifest.generator.catalog not in CATALOGS:
        return
    joined = " | then ".join(s.source for s in manifest.stages)
    if joined != manifest.canonical:
        r.fail("does not match the stages' own texts joined by ' | then '", "canonical")
    for key, text in (("canonical", manifest.canonical), ("source", manifest.source)):
        try:
            program = compile_program(text, gen=manifest.generator.catalog)
        except EnergyQLError as error:
            r.fail(f"is not a valid program of the {manifest.generator.catalog} world: "
                   f"{error.message}", key)
        if str(program) != manifest.canonical:
            r.fail("does not compile to the canonical program recorded beside it"
                   if key == "source" else "is not in canonical form", key)


def _check_lambda_sizes(manifest: Manifest, r: _Reader) -> None:
    """Refuse λ lists whose length is not the size of the constraint they belong to.

    The sizes come from the canonical program checked against the generator's world; a world
    this installation does not know is left to the loader (it cannot build the energies).
    """
    from energyql.catalog import CATALOGS
    from energyql.errors import EnergyQLError
    from energyql.lang.api import compile as compile_program

    if manifest.generator.catalog not in CATALOGS or not any(
            s.lam or s.lam_exact for s in manifest.stages):
        return
    try:
        program = compile_program(manifest.canonical, gen=manifest.generator.catalog)
    except EnergyQLError as error:
        r.fail(f"is not a valid program of the {manifest.generator.catalog} world: "
               f"{error.message}", "canonical")
    if len(program.stages) != len(manifest.stages):
        r.fail(f"has {len(program.stages)} stage(s) but the manifest records "
               f"{len(manifest.stages)}", "canonical")
    for k, (stage, record) in enumerate(zip(program.stages, manifest.stages)):
        sizes = {str(t): t.size for t in stage.constraints}
        for key, lambdas in (("lambda", record.lam), ("lambda_exact", record.lam_exact),
                             ("targets", record.targets)):
            for text, values in (lambdas or {}).items():
                if text not in sizes:
                    r.fail("names no constraint of its stage", f"stages[{k}].{key}.{text}")
                if len(values) != sizes[text]:
                    r.fail(f"has {len(values)} values; the constraint needs {sizes[text]}",
                           f"stages[{k}].{key}.{text}")


def _digest(r: _Reader, key: str) -> str:
    value = r.text(key, "") if r.data.get(key) is not None else ""
    if value and (len(value) != 64 or any(c not in "0123456789abcdef" for c in value)):
        r.fail("must be a sha256 digest (64 lowercase hex digits)", key)
    return value


__all__ = ["FORMAT_VERSION", "MANIFEST", "ContextRecord", "FitRecord", "FlowRecord",
           "GeneratorRecord", "Manifest", "StageRecord", "TrainRecord"]
