"""Trained samplers: a stage is a flow in front of a generator, and is itself a Generator.

``eps -> T_k -> eps_{k-1} -> T_{k-1} -> ... -> z -> G -> image``: sampling is feed-forward and
needs only the base generator, none of the control models. An artifact directory holds the
flows as safetensors and a JSON manifest; loading never unpickles anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from energyql.energies.conditional import ContextParam, normalize_context
from energyql.errors import ArtifactError
from energyql.flows import FlowConfig, LatentFlow
from energyql.generators.base import Generator
from energyql.io import save_tensors, write_text
from energyql.manifest import (FORMAT_VERSION, MANIFEST, ContextRecord, FlowRecord, GeneratorRecord,
                               Manifest, StageRecord)

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

    def context_tensor(self, values: dict[str, float] | None, n: int) -> torch.Tensor:
        """Return ``(n, P)`` context values from a name → value dict (unnamed: mid-range)."""
        values = dict(values or {})
        unknown = set(values) - {p.name for p in self.context_params}
        if unknown:
            raise ArtifactError(f"unknown context parameter(s): {', '.join(sorted(unknown))}",
                                hint="this sampler takes: " + ", ".join(
                                    p.name for p in self.context_params) or "no context")
        row = [float(values.get(p.name, (p.low + p.high) / 2)) for p in self.context_params]
        return torch.tensor(row).expand(n, -1).clone()

    def decode(self, eps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.base.decode(self.latent(eps, context))

    @property
    def stages(self) -> list["StageSampler"]:
        """Every stage from the first to this one."""
        earlier = self.base.stages if isinstance(self.base, StageSampler) else []
        return [*earlier, self]

    @property
    def root(self) -> Generator:
        """The original generator under every stage."""
        return self.stages[0].base


class Artifact:
    """A trained controlled sampler plus its manifest (expression, settings, metrics)."""

    def __init__(self, sampler: StageSampler, manifest: Manifest):
        self.sampler = sampler
        self.manifest = manifest

    def sample(self, n: int, *, seed: int | None = None, batch_size: int = 256,
               context: dict[str, float] | torch.Tensor | None = None) -> torch.Tensor:
        """Return ``n`` controlled images in [0, 1].

        ``context`` sets a conditional sampler's parameters, e.g. ``{"x": 0.3}`` (others
        mid-range), or per-sample values ``(n, P)``.
        """
        self.sampler.eval()
        if self.sampler.context_params and not isinstance(context, torch.Tensor):
            context = self.sampler.context_tensor(context, n)
        return self.sampler.sample(n, seed=seed, batch_size=batch_size, context=context)

    def save(self, directory: str | Path) -> Path:
        """Write ``flows.safetensors`` and ``manifest.json`` into ``directory`` (atomically)."""
        directory = Path(directory)
        tensors = {}
        for stage in self.sampler.stages:
            for key, value in stage.flow.state_dict().items():
                tensors[f"stage{stage.index}.{key}"] = value
        text = self.manifest.to_json()  # refuses non-finite figures before anything is written
        save_tensors(directory / FLOWS, tensors)
        write_text(directory / MANIFEST, text)
        return directory


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
                                              root.latent_dim, root.catalog),
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
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from energyql.generators import load as load_generator

    directory = Path(directory)
    manifest = read_manifest(directory)
    base = load_generator(gen or manifest.generator.id, device=device, **generator_options) \
        if not isinstance(gen, Generator) else gen
    expected = manifest.generator.weights_digest
    if strict_digest and expected and base.weights_digest and base.weights_digest != expected:
        raise ArtifactError(
            f"artifact was trained on {manifest.generator.id} weights {expected[:12]}…, "
            f"but the generator given has weights {base.weights_digest[:12]}…",
            hint="use the same weights, or pass strict_digest=False to sample anyway")
    if not (directory / FLOWS).is_file():
        raise ArtifactError(f"'{directory}' has no {FLOWS}",
                            hint="the artifact is incomplete; train it again")
    try:
        tensors = load_file(str(directory / FLOWS), device=device)
    except (SafetensorError, OSError, ValueError) as error:
        raise ArtifactError(f"{directory / FLOWS} cannot be read: {str(error).splitlines()[0]}",
                            hint="the file is damaged; train the artifact again") from None
    sampler: Generator = base
    for k, stage in enumerate(manifest.stages):
        if stage.flow.dim != sampler.latent_dim:
            # Checked before the flow is built: its size comes from the file.
            raise ArtifactError(
                f"{directory / MANIFEST}: field 'stages[{k}].flow.dim' is {stage.flow.dim}, but "
                f"the generator under stage {stage.index} has latent size {sampler.latent_dim}",
                hint="the manifest does not belong to this generator")
        flow = LatentFlow(FlowConfig(**stage.flow.to_dict()))
        prefix = f"stage{stage.index}."
        state = {key[len(prefix):]: v for key, v in tensors.items() if key.startswith(prefix)}
        try:
            flow.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ArtifactError(f"stage {stage.index} of '{directory}' does not match its "
                                f"manifest: {str(error).splitlines()[0]}",
                                hint="flows and manifest come from different runs; train "
                                     "the artifact again") from None
        if not all(bool(torch.isfinite(v).all()) for v in state.values()):
            raise ArtifactError(f"{directory / FLOWS}: stage {stage.index}'s flow holds "
                                "non-finite weights (NaN or infinity)",
                                hint="the run diverged or the file is damaged; train it again")
        context = [ContextParam(**c.to_dict()) for c in stage.context]
        sampler = StageSampler(sampler, flow.to(device), stage.index, stage.source,
                               context).eval()
    if not isinstance(sampler, StageSampler):
        raise ArtifactError(f"'{directory}' has no trained stage")
    return Artifact(sampler, manifest)


__all__ = ["FLOWS", "FORMAT_VERSION", "MANIFEST", "Artifact", "StageSampler", "load",
           "manifest_for", "read_manifest", "set_exact_lambdas", "stage_record"]
