"""Trained samplers: a stage is a flow in front of a generator, and is itself a Generator.

``eps -> T_k -> eps_{k-1} -> T_{k-1} -> ... -> z -> G -> image``: sampling is feed-forward and
needs only the base generator, none of the control models. An artifact directory holds the
flows as safetensors and a JSON manifest; loading never unpickles anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from energyql.energies.conditional import ContextParam, inherited_context, normalize_context
from energyql.energies.sliders import SLIDER, LambdaGrid, setting_row
from energyql.errors import ArtifactError, UsageError, check_choice
from energyql.flows import FixedContextFlow, FlowConfig, LatentFlow
from energyql.generators.base import Generator
from energyql.io import (
    commit,
    committed_file,
    expected_tensors,
    read_safetensors,
    staged,
    write_text,
)
from energyql.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    ContextRecord,
    FlowRecord,
    GeneratorRecord,
    Manifest,
    StageRecord,
)

FLOWS = "flows.safetensors"


class StageSampler(Generator):
    """Creates the Generator ``eps -> base.decode(T(eps))`` of one trained stage.

    Arguments:
        base: the generator this stage was trained on (the base or the previous stage).
        flow: the stage's latent flow.
        index: the stage's number, from 1.
        source: the stage's canonical expression.
    """

    def __init__(self, base: Generator, flow: LatentFlow, index: int = 1, source: str = "",
                 context: list[ContextParam] | tuple = ()):
        super().__init__()
        self.base = base
        self.flow = flow
        self.index = index
        self.source = source  # the stage's canonical expression
        # A conditional stage's free parameters: decode() takes their values (physical units).
        self.context_params = list(context)
        self.context_dim = len(self.context_params)
        self.latent_dim = base.latent_dim
        self.latent_shape = getattr(base, "latent_shape", None)
        self.catalog = base.catalog
        self.image_size = base.image_size
        self.id = base.id
        self.weights_digest = base.weights_digest

    def latent(self, eps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Return the base generator's latent for this stage's noise (and context values)."""
        return self.flow(eps, self.flow_context(context, len(eps)))[0]

    def flow_context(self, context: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """The flow's context input for requested values; None for unconditional stages."""
        if not self.context_params:
            return None
        if context is None:
            raise ArtifactError(
                "this sampler is conditional: give values for "
                + ", ".join(f"{p.name} in {p.low:g}..{p.high:g}" for p in self.context_params),
                hint="e.g. energyql sample ARTIFACT --set NAME=VALUE, or sample(n, context={...})")
        context = torch.as_tensor(context, dtype=torch.float32, device=self.device)
        return normalize_context(self.context_params, context.expand(n, -1))

    def context_tensor(self, values: Mapping[str, float] | None, n: int) -> torch.Tensor:
        """Return ``(n, P)`` context values from a name → value dict (unnamed: mid-range).

        Unknown names, values outside the trained ranges, and any value for an unconditional
        sampler are refused (:func:`check_context`).
        """
        values = check_context(self.context_params, values)
        row = [float(values.get(p.name, (p.low + p.high) / 2)) for p in self.context_params]
        return torch.tensor(row).expand(n, -1).clone()

    def decode(self, eps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        # A stage after a slider stage passes the earlier stage its sliders' values.
        return self.base.decode(self.latent(eps, context),
                                inherited_context(self.base, self.context_params, context))

    @property
    def stages(self) -> list[StageSampler]:
        """Every stage from the first to this one."""
        earlier = self.base.stages if isinstance(self.base, StageSampler) else []
        return [*earlier, self]

    @property
    def root(self) -> Generator:
        """The original generator under every stage."""
        return self.stages[0].base


def _range_hint(params: Sequence[Any]) -> str:
    return "this sampler was trained on " + ", ".join(
        f"{p.name} in {p.low:g}..{p.high:g}" for p in params)


def context_grid(low: float, high: float, steps: int) -> list[float]:
    """Return ``steps`` evenly spaced values from ``low`` to ``high``, both ends exact.

    Built in Python floats (the precision of a context range, as :func:`check_context` reads
    it) and clamped to the range: a grid built in float32 rounds a bound such as 0.8 up to
    0.800000012, outside the range it was meant to cover.
    """
    if steps < 1:
        raise UsageError(f"a grid needs at least one value, got {steps}")
    if steps == 1:
        return [(low + high) / 2]
    values = [low + (high - low) * i / (steps - 1) for i in range(steps)]
    values[0], values[-1] = low, high
    return [min(max(v, low), high) for v in values]


def check_context(params: Sequence[Any], values: Mapping[str, Any] | None) -> dict[str, float]:
    """Return ``values`` as floats if a sampler with context ``params`` can take them.

    ``params`` are the conditional stage's parameters (``name``, ``low``, ``high``: a
    :class:`ContextParam` or a manifest's ``ContextRecord``). A value for an unconditional
    sampler, an unknown name, a non-number and a value outside the trained range are
    :class:`~energyql.errors.UsageError`: the flow never saw such inputs.
    """
    values = dict(values or {})
    if values and not params:
        raise UsageError("this sampler is unconditional: it takes no context values "
                         f"(got {', '.join(sorted(map(str, values)))})",
                         hint="drop --set/--sweep (context= in Python); only samplers trained "
                              "with sliders or pose(...) take values")
    checked = {}
    for name, value in values.items():
        check_choice(str(name), [p.name for p in params], what="context parameter")
        param = next(p for p in params if p.name == name)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"context value {name}={value!r} is not a number",
                             hint=_range_hint(params)) from None
        if not math.isfinite(number) or not param.low <= number <= param.high:
            raise UsageError(f"context value {name}={number:g} is outside the trained range "
                             f"{param.low:g}..{param.high:g}",
                             hint=f"give {name} in {param.low:g}..{param.high:g}: the flow was "
                                  "trained only there")
        checked[name] = number
    return checked


def check_context_tensor(params: Sequence[Any], context: torch.Tensor, n: int) -> torch.Tensor:
    """Return per-sample context values ``(n, P)`` if they fit ``params`` (else UsageError)."""
    if not params:
        raise UsageError("this sampler is unconditional: it takes no context values",
                         hint="drop context=; only samplers trained with sliders or pose(...) "
                              "take values")
    context = torch.as_tensor(context, dtype=torch.float32)
    if context.dim() == 1:
        context = context.expand(n, -1)
    if context.shape != (n, len(params)):
        raise UsageError(f"context has shape {tuple(context.shape)}; this sampler needs "
                         f"({n}, {len(params)}): one column per parameter "
                         f"({', '.join(p.name for p in params)})", hint=_range_hint(params))
    for column, param in enumerate(params):
        values = context[:, column]
        outside = ~torch.isfinite(values) | (values < param.low) | (values > param.high)
        if bool(outside.any()):
            bad = float(values[outside][0])
            raise UsageError(f"context value {param.name}={bad:g} is outside the trained range "
                             f"{param.low:g}..{param.high:g}",
                             hint=f"give {param.name} in {param.low:g}..{param.high:g}: the "
                                  "flow was trained only there")
    return context


class Artifact:
    """A trained controlled sampler plus its manifest (expression, settings, metrics)."""

    def __init__(self, sampler: StageSampler, manifest: Manifest,
                 setting: Mapping[str, float] | None = None):
        self.sampler = sampler
        self.manifest = manifest
        # A view at one slider setting (Artifact.at): the sliders' values.
        self.setting = dict(setting) if setting is not None else None

    def sample(self, n: int, *, seed: int | None = None, batch_size: int = 256,
               context: dict[str, float] | torch.Tensor | None = None) -> torch.Tensor:
        """Return ``n`` controlled images in [0, 1].

        ``context`` sets a conditional sampler's parameters, e.g. ``{"x": 0.3}`` (others
        mid-range), or per-sample values ``(n, P)``.
        """
        self.sampler.eval()
        if isinstance(context, torch.Tensor):
            context = check_context_tensor(self.sampler.context_params, context, n)
        elif self.sampler.context_params or context:
            context = self.sampler.context_tensor(context, n)
        else:
            context = None  # e.g. an empty dict
        return self.sampler.sample(n, seed=seed, batch_size=batch_size, context=context)

    @property
    def sliders(self) -> list[ContextParam]:
        """The last stage's sliders (numbers of the expression set at sample time)."""
        return [p for p in self.sampler.context_params if p.control == SLIDER]

    def at(self, values: Mapping[str, float] | None = None, /, **named: float) -> Artifact:
        """Return this artifact at one slider setting: a view without sliders sharing the
        flows' weights (a pose stage keeps its own parameters), whose manifest is the program
        at that setting with λ at it (from the stage's λ grid). Every sampler and
        :func:`energyql.evaluate` take it as they take an artifact trained at that setting
        alone. Sliders not given sit at their middles; a
        value outside a range is a UsageError that gives the range."""
        return artifact_at(self, {**(values or {}), **named})

    def save(self, directory: str | Path) -> Path:
        """Write ``flows.safetensors`` and ``manifest.json`` into ``directory`` as one commit.

        The flows are staged first and the manifest, which records their sha256, is the
        commit point (:func:`energyql.io.commit`): a reader, or a run killed at any moment,
        sees the old artifact or the new one, never flows of one run with the manifest of
        another. Non-finite weights or figures are refused before anything is written.
        """
        from safetensors.torch import save_file

        directory = Path(directory)
        if any(isinstance(stage.flow, FixedContextFlow) for stage in self.sampler.stages):
            raise ArtifactError("an artifact at one slider setting is a view of the trained "
                                "one; it is not saved",
                                hint="save the artifact itself; Artifact.at() gives the view")
        tensors = {}
        for stage in self.sampler.stages:
            for key, value in stage.flow.state_dict().items():
                tensors[f"stage{stage.index}.{key}"] = value.detach().cpu().contiguous()
        self.manifest.to_json()  # refuses non-finite figures before anything is written
        bad = next((k for k, v in tensors.items()
                    if v.is_floating_point() and not bool(torch.isfinite(v).all())), None)
        if bad is not None:
            raise ArtifactError(f"refusing to save '{directory}': flow weight '{bad}' holds "
                                "non-finite values (NaN or infinity)",
                                hint="the run diverged; lower --lr and train again")
        directory.mkdir(parents=True, exist_ok=True)

        def write_manifest(digest: str) -> None:
            self.manifest = replace(self.manifest, flows_sha256=digest)
            write_text(directory / MANIFEST, self.manifest.to_json())

        commit(directory / FLOWS, lambda tmp: save_file(tensors, tmp), write_manifest,
               committed_digest=_recorded_flows_digest(directory))
        return directory


def artifact_at(artifact: Artifact, values: Mapping[str, Any]) -> Artifact:
    """See :meth:`Artifact.at`."""
    from energyql.lang.api import compile as compile_program
    from energyql.lang.settings import check_setting

    last = artifact.sampler
    program = compile_program(artifact.manifest.canonical, gen=last.catalog)
    setting = check_setting(program.sliders, values)  # unknown names, values out of range
    fixed = program.at(setting)
    if not last.context_params:
        return artifact
    # Every stage that takes sliders (the one that has them and every stage after it) is
    # fixed at the setting; a pose stage's own parameters stay free.
    records = list(artifact.manifest.stages)
    sampler: Generator = last.root
    for k, stage in enumerate(last.stages):
        params = stage.context_params
        held = [i for i, p in enumerate(params) if p.control == SLIDER]
        if held:
            records[k] = _record_at(records[k], stage, str(fixed.stages[k]), fixed.stages[k],
                                    setting)
            row = torch.tensor([[setting[params[i].name] for i in held]])
            held_values = normalize_context([params[i] for i in held], row)
            flow = FixedContextFlow(stage.flow, held_values.to(stage.device), held)
            sampler = StageSampler(sampler, cast(LatentFlow, flow), stage.index,
                                   str(fixed.stages[k]),
                                   [p for p in params if p.control != SLIDER]).eval()
        else:
            sampler = StageSampler(sampler, stage.flow, stage.index, stage.source).eval()
    manifest = replace(artifact.manifest, canonical=str(fixed), stages=tuple(records))
    return Artifact(cast(StageSampler, sampler), manifest, setting)


def _record_at(record: StageRecord, stage: StageSampler, source: str, fixed_stage: Any,
               setting: Mapping[str, float]) -> StageRecord:
    """A slider stage's manifest record at one setting: its source with the sliders' values,
    no sliders in its context (pose parameters stay), and λ read off the stage's λ grid there
    (the exact fit)."""
    lam = dict(record.exact_lambdas())
    params = stage.context_params
    if record.lambda_grid is not None:
        constraints = fixed_stage.constraints
        grid = LambdaGrid(list(params), list(range(len(params))),
                          sum(c.size for c in constraints), record.lambda_grid.points)
        grid.values.copy_(torch.tensor(record.lambda_grid.lam, dtype=grid.values.dtype))
        packed = grid.at(setting_row(params, setting)[None])[0].tolist()
        lam, start = {}, 0
        for constraint in constraints:
            lam[str(constraint)] = tuple(round(v, 6) for v in packed[start:start + constraint.size])
            start += constraint.size
    free = tuple(c for c in record.context if c.control != SLIDER)  # pose parameters
    return replace(record, source=source, context=free,
                   flow=replace(record.flow, context_dim=len(free)), lam=lam, lam_exact=lam,
                   lambda_grid=None)


def _recorded_flows_digest(directory: Path) -> str | None:
    """The flows digest the manifest now in ``directory`` records (None if there is none)."""
    try:
        return Manifest.read(directory).flows_sha256 or None
    except ArtifactError:  # no artifact yet, or a damaged one about to be replaced
        return None


def stage_record(stage: StageSampler) -> StageRecord:
    """Return the manifest record of a stage's shape: index, expression, flow and context."""
    return StageRecord(index=stage.index, source=stage.source,
                       flow=FlowRecord(**stage.flow.config.to_dict()),
                       context=tuple(ContextRecord(**p.to_dict()) for p in stage.context_params))


def manifest_for(sampler: StageSampler, *, source: str, canonical: str | None = None,
                 controls: dict[str, Any] | None = None,
                 stages: tuple[StageRecord, ...] | None = None) -> Manifest:
    """Return the manifest of a sampler (default stage records: shapes only, no training)."""
    from energyql import __version__

    root = sampler.root
    return Manifest(source=source, canonical=canonical if canonical is not None else source,
                    generator=GeneratorRecord(root.id, root.weights_digest or "",
                                              root.latent_dim, root.catalog,
                                              dict(getattr(root, "load_options", {}))),
                    stages=stages if stages is not None else tuple(
                        stage_record(s) for s in sampler.stages),
                    controls=controls, energyql_version=__version__)


def set_exact_lambdas(energy: Any, record: StageRecord) -> None:
    """Give a stage energy's constraints the λ of the exact target recorded in a manifest.

    ``lambda_exact`` is the importance-weighted fit; ``lambda`` (older manifests) also holds the
    flow's feedback offset.
    """
    from energyql.energies.constraint import set_targets

    set_targets(energy, record.targets or {})  # restore targets estimated when training
    grid = getattr(energy, "lambda_grid", None)
    if grid is not None and record.lambda_grid is not None:
        table = torch.tensor(record.lambda_grid.lam, dtype=grid.values.dtype)
        if table.shape != grid.values.shape or \
                list(record.lambda_grid.sliders) != [p.name for p in grid.params]:
            raise ArtifactError(
                f"{MANIFEST}: field 'stages[{record.index - 1}].lambda_grid' does not fit the "
                "stage's sliders and constraints",
                hint="the manifest does not belong to this program; train it again")
        grid.values.copy_(table)
    lambdas = record.exact_lambdas()
    for constraint in energy.constraints:
        if constraint.text in lambdas:
            values = lambdas[constraint.text]
            if len(values) != constraint.target.numel():
                raise ArtifactError(
                    f"{MANIFEST}: field 'stages[{record.index - 1}].lambda_exact.{constraint.text}'"
                    f" has {len(values)} values; the constraint needs {constraint.target.numel()}",
                    hint="the manifest does not belong to this program; train it again")
            constraint.lam.copy_(torch.tensor(values))


def read_manifest(directory: str | Path) -> Manifest:
    """Return the checked manifest of the artifact in ``directory``."""
    return Manifest.read(directory)


def load(directory: str | Path, *, gen: Generator | str | None = None, device: str = "cpu",
         strict_digest: bool = True, **generator_options) -> Artifact:
    """Return the Artifact saved in ``directory``; its sampler needs only the generator.

    Arguments:
        gen: the base generator (a name, a Generator); default: the one the manifest names.
        strict_digest: refuse a generator whose weights differ from the ones trained on.
    """
    from energyql.generators import load as load_generator

    directory = Path(directory)
    manifest = read_manifest(directory)
    if gen is None:
        generator_options = {**manifest.generator.options, **generator_options}
    base = load_generator(gen or manifest.generator.id, device=device, **generator_options) \
        if not isinstance(gen, Generator) else gen
    expected = manifest.generator.weights_digest
    if strict_digest and expected and base.weights_digest and base.weights_digest != expected:
        raise ArtifactError(
            f"artifact was trained on {manifest.generator.id} weights {expected[:12]}…, "
            f"but the generator given has weights {base.weights_digest[:12]}…",
            hint="use the same weights, or pass strict_digest=False to sample anyway")
    # Flows are built from the (bounded) manifest first: the file must then hold exactly their
    # tensors, and nothing is read from it that they do not account for.
    flows: list[LatentFlow] = []
    latent_dim = base.latent_dim
    latent_shape = getattr(base, "latent_shape", None)
    for k, stage in enumerate(manifest.stages):
        if stage.flow.dim != latent_dim:
            raise ArtifactError(
                f"{directory / MANIFEST}: field 'stages[{k}].flow.dim' is {stage.flow.dim}, but "
                f"the generator under stage {stage.index} has latent size {latent_dim}",
                hint="the manifest does not belong to this generator")
        if stage.flow.kind == "conv" and latent_shape and \
                tuple(stage.flow.shape) != tuple(latent_shape):
            raise ArtifactError(
                f"{directory / MANIFEST}: field 'stages[{k}].flow.shape' is "
                f"{list(stage.flow.shape)}, but the generator under stage {stage.index} has "
                f"latents of shape {list(latent_shape)}",
                hint="the manifest does not belong to this generator")
        # The record was checked (energyql.manifest): sizes bounded, a conv shape that fits.
        flows.append(LatentFlow(FlowConfig(**stage.flow.to_dict())))
    if not flows:
        raise ArtifactError(f"'{directory}' has no trained stage")
    state = {f"stage{s.index}.{key}": value for s, flow in zip(manifest.stages, flows)
             for key, value in flow.state_dict().items()}
    tensors = _read_flows(directory, manifest, state)
    sampler: Generator = base
    for stage, flow in zip(manifest.stages, flows):
        prefix = f"stage{stage.index}."
        flow.load_state_dict({key[len(prefix):]: v for key, v in tensors.items()
                              if key.startswith(prefix)}, strict=True)
        context = [ContextParam(**c.to_dict()) for c in stage.context]
        below = getattr(sampler, "context_params", ())
        if any(p.control != SLIDER or p not in context for p in below):
            raise ArtifactError(
                f"{directory / MANIFEST}: stage {stage.index} stands on a conditional stage "
                "whose context it does not take (only an earlier stage's sliders carry over)",
                hint="the manifest is damaged; train the artifact again")
        sampler = StageSampler(sampler, flow.to(device), stage.index, stage.source,
                               context).eval()
    if not isinstance(sampler, StageSampler):
        raise ArtifactError(f"'{directory}' has no trained stage")
    return Artifact(sampler, manifest)


def _read_flows(directory: Path, manifest: Manifest, state: dict[str, torch.Tensor]
                ) -> dict[str, torch.Tensor]:
    """Return the flow tensors committed with ``manifest``, checked against ``state``'s shapes."""
    path = directory / FLOWS
    digest = manifest.flows_sha256 or None
    committed = committed_file(path, digest)
    if committed is None and digest is not None and (path.is_file() or staged(path).is_file()):
        # A writer may have promoted the staged file between our look and now: look once more.
        committed = committed_file(path, digest)
        if committed is None:
            raise ArtifactError(
                f"{path} does not belong to {directory / MANIFEST}: its sha256 differs from the "
                "one the manifest records (flows and manifest come from different runs, or the "
                "file was changed)", hint="train the artifact again")
    if committed is None:
        raise ArtifactError(f"'{directory}' has no {FLOWS}",
                            hint="the artifact is incomplete; train it again")
    # Generous room for the header (names, dtypes, shapes) on top of the tensors' bytes.
    max_bytes = sum(v.numel() * v.element_size() for v in state.values()) + (1 << 20) \
        + 512 * len(state)
    hint = "the artifact is damaged, or its flows and manifest come from different runs; " \
        "train it again"
    if any(stage.flow.kind == "spline" for stage in manifest.stages):
        hint += " (spline flows trained before 2026-12-08 used zuko's couplings, which this " \
            "version replaced by its own: train those again too)"
    tensors, _ = read_safetensors(committed, max_bytes=max_bytes, expected=expected_tensors(state),
                                  error=ArtifactError, digest=digest, hint=hint)
    return tensors



def _with_settings(context: Mapping[str, float] | torch.Tensor | None,
                   settings: Mapping[str, float]) -> Mapping[str, float] | torch.Tensor | None:
    """``context`` with sliders given by keyword (``sample(n, p=0.3)``) merged in."""
    if not settings:
        return context
    if isinstance(context, torch.Tensor):
        raise UsageError("give a context tensor or slider values by name, not both")
    return {**(context or {}), **settings}


class Sampler(nn.Module):
    """Creates a torch module that draws controlled samples from a trained artifact.

    It wraps the artifact's chain of stages (``eps -> T_K -> ... -> T_1 -> z -> G -> image``)
    and needs only the base generator. Parameters are frozen and every method runs under
    ``torch.no_grad()`` unless called with ``grad=True`` (then gradients reach ``eps``, and
    the flows' parameters too once ``requires_grad_(True)`` is called).

    Arguments:
        artifact: a trained :class:`Artifact` (see :meth:`load`).

    Example:
        >>> sampler = energyql.Sampler.load("runs/red-circles", device="cuda")  # doctest: +SKIP
        >>> images = sampler.sample(64, seed=0)            # (64, 3, H, W) in [0, 1]
        >>> z = sampler.sample_latents(64, seed=0)         # the generator's latents
        >>> sampler.log_prob(z)                            # their exact log-density
        >>> images = sampler(torch.randn(8, sampler.latent_dim))   # forward(eps)
    """

    def __init__(self, artifact: Artifact):
        super().__init__()
        self.chain = artifact.sampler.eval().requires_grad_(False)
        self.manifest = artifact.manifest

    @classmethod
    def load(cls, directory: str | Path, *, device: str | torch.device = "cpu",
             gen: Generator | str | None = None, strict_digest: bool = True,
             **generator_options: Any) -> Sampler:
        """Return the sampler of the artifact saved in ``directory``, on ``device``."""
        return cls(load(directory, gen=gen, device=str(device), strict_digest=strict_digest,
                        **generator_options))

    @property
    def latent_dim(self) -> int:
        """Size of the noise ``eps`` the sampler takes."""
        return self.chain.latent_dim

    @property
    def context_params(self) -> tuple[ContextParam, ...]:
        """The conditional stage's parameters (name, trained range); empty if unconditional."""
        return tuple(self.chain.context_params)

    @property
    def device(self) -> torch.device:
        return self.chain.device

    def _context(self, context: Mapping[str, float] | torch.Tensor | None,
                 n: int) -> torch.Tensor | None:
        """Checked context values ``(n, P)`` on the sampler's device (None: unconditional)."""
        if isinstance(context, torch.Tensor):
            values = check_context_tensor(self.context_params, context.cpu(), n)
        elif context or self.context_params:
            values = self.chain.context_tensor(context, n)
        else:
            return None
        return values.to(self.device)

    def _stage_context(self, stage: StageSampler, values: torch.Tensor | None,
                       n: int) -> torch.Tensor | None:
        """One stage's flow context from the last stage's values (an earlier slider stage
        takes its own sliders' columns)."""
        return stage.flow_context(inherited_context(stage, self.chain.context_params, values), n)

    def noise(self, n: int, *, seed: int | None = None) -> torch.Tensor:
        """Return ``n`` noises ``eps ~ N(0, I)`` (drawn on the CPU: the same on any device)."""
        generator = torch.Generator()
        if seed is not None:
            generator.manual_seed(seed)
        else:
            generator.seed()
        return torch.randn(n, self.latent_dim, generator=generator).to(self.device)

    def latents(self, eps: torch.Tensor, context: Mapping[str, float] | torch.Tensor | None = None,
                *, grad: bool = False) -> torch.Tensor:
        """Return the base generator's latents ``z = T_1(...T_K(eps))`` for noise ``eps``."""
        values = self._context(context, len(eps))
        with torch.set_grad_enabled(grad):
            x = eps.to(self.device)
            for stage in reversed(self.chain.stages):
                x = stage.flow(x, self._stage_context(stage, values, len(x)))[0]
            return x

    def forward(self, eps: torch.Tensor,
                context: Mapping[str, float] | torch.Tensor | None = None, *,
                grad: bool = False) -> torch.Tensor:
        """Return images in [0, 1] for noise ``eps`` (and context values, if conditional)."""
        z = self.latents(eps, context, grad=grad)
        with torch.set_grad_enabled(grad):
            return self.chain.root.decode(z)

    def sample_latents(self, n: int, *, seed: int | None = None,
                       context: Mapping[str, float] | torch.Tensor | None = None,
                       grad: bool = False) -> torch.Tensor:
        """Return ``n`` controlled latents of the base generator (what it decodes)."""
        return self.latents(self.noise(n, seed=seed), context, grad=grad)

    def sample(self, n: int, *, seed: int | None = None,
               context: Mapping[str, float] | torch.Tensor | None = None,
               batch_size: int = 256, grad: bool = False, **settings: float) -> torch.Tensor:
        """Return ``n`` controlled images in [0, 1], shape ``(n, 3, H, W)``, decoded in batches.

        ``context`` sets a conditional sampler's parameters, e.g. ``{"x": 0.3}`` (others
        mid-range), or per-sample values ``(n, P)``; values must lie in the trained ranges.
        Sliders may also be given by name: ``sample(16, p=0.3)``.
        """
        if n < 0 or batch_size < 1:
            raise UsageError(f"sample needs n >= 0 and batch_size >= 1, got n={n}, "
                             f"batch_size={batch_size}")
        eps = self.noise(n, seed=seed)
        values = self._context(_with_settings(context, settings), n)
        out = []
        for start in range(0, n, batch_size):
            rows = slice(start, start + batch_size)
            out.append(self(eps[rows], None if values is None else values[rows], grad=grad))
        return torch.cat(out) if out else torch.empty(0, 3, 0, 0)

    def log_prob(self, z: torch.Tensor,
                 context: Mapping[str, float] | torch.Tensor | None = None, *,
                 grad: bool = False, **settings: float) -> torch.Tensor:
        """Return the exact log-density of the sampler's latents at ``z``, shape ``(B,)``.

        Each stage's flow is inverted in turn (``eps_k = T_k^{-1}(eps_{k-1})``, ``eps_0 = z``)
        and ``log q(z) = log N(eps_K; 0, I) + Σ_k log|det d eps_k / d eps_{k-1}|``.
        """
        from energyql.flows import standard_normal_log_prob

        values = self._context(_with_settings(context, settings), len(z))
        with torch.set_grad_enabled(grad):
            x = z.to(self.device)
            total = torch.zeros(len(x), device=x.device)
            for stage in self.chain.stages:
                x, logdet = stage.flow.inverse(x, self._stage_context(stage, values, len(x)))
                total = total + logdet
            return standard_normal_log_prob(x) + total

    def extra_repr(self) -> str:
        return f"{self.manifest.canonical!r}, generator={self.manifest.generator.id!r}"


__all__ = ["FLOWS", "FORMAT_VERSION", "MANIFEST", "Artifact", "Sampler", "StageSampler",
           "check_context", "check_context_tensor", "context_grid", "load", "manifest_for",
           "read_manifest", "set_exact_lambdas", "stage_record"]
