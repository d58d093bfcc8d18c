"""Trained samplers: a stage is a flow in front of a generator, and is itself a Generator.

``eps -> T_k -> eps_{k-1} -> T_{k-1} -> ... -> z -> G -> image``: sampling is feed-forward and
needs only the base generator, none of the control models. An artifact directory holds the
flows as safetensors and a JSON manifest; loading never unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from energyql.energies.conditional import ContextParam, normalize_context
from energyql.errors import ArtifactError
from energyql.flows import FlowConfig, LatentFlow
from energyql.generators.base import Generator
from energyql.io import save_tensors, write_json

MANIFEST = "manifest.json"
FLOWS = "flows.safetensors"
FORMAT_VERSION = 1


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

    def __init__(self, sampler: StageSampler, manifest: dict):
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

    @property
    def generator(self) -> StageSampler:
        return self.sampler

    def save(self, directory: str | Path) -> Path:
        """Write ``flows.safetensors`` and ``manifest.json`` into ``directory`` (atomically)."""
        directory = Path(directory)
        tensors = {}
        for stage in self.sampler.stages:
            for key, value in stage.flow.state_dict().items():
                tensors[f"stage{stage.index}.{key}"] = value
        save_tensors(directory / FLOWS, tensors)
        write_json(directory / MANIFEST, self.manifest)
        return directory


def build_manifest(*, source: str, canonical: str, generator: Generator, stages: list[dict],
                   metrics: dict | None = None) -> dict:
    from energyql import __version__

    return {
        "format": FORMAT_VERSION,
        "energyql_version": __version__,
        "source": source,
        "canonical": canonical,
        "generator": {"id": generator.id, "weights_digest": generator.weights_digest,
                      "latent_dim": generator.latent_dim, "catalog": generator.catalog,
                      # Loader options that shape the generator (diffusion steps, truncation).
                      "options": dict(getattr(generator, "load_options", {}))},
        "stages": stages,
        "metrics": metrics or {},
    }


def set_exact_lambdas(energy, stage_record: dict) -> None:
    """Give a stage energy's constraints the λ of the exact target recorded in a manifest.

    ``lambda_exact`` is the importance-weighted fit; ``lambda`` (older manifests) also holds the
    flow's feedback offset.
    """
    lambdas = stage_record.get("lambda_exact", stage_record.get("lambda", {}))
    for constraint in energy.constraints:
        if constraint.text in lambdas:
            constraint.lam.copy_(torch.tensor(lambdas[constraint.text]))


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"'{directory}' is not an energyql artifact: {MANIFEST} is missing",
                            hint="pass the --out directory of an `energyql run`")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ArtifactError(f"{path} is not valid JSON: {error}") from None
    if manifest.get("format") != FORMAT_VERSION:
        raise ArtifactError(f"{path} has format {manifest.get('format')!r}; "
                            f"this energyql reads format {FORMAT_VERSION}")
    return manifest


def load(directory: str | Path, *, gen: Generator | str | None = None, device: str = "cpu",
         strict_digest: bool = True, **generator_options) -> Artifact:
    """Return the Artifact saved in ``directory``; its sampler needs only the generator.

    Arguments:
        gen: the base generator (a name, a Generator); default: the one the manifest names.
        strict_digest: refuse a generator whose weights differ from the ones trained on.
    """
    from safetensors.torch import load_file

    from energyql.generators import load as load_generator

    directory = Path(directory)
    manifest = read_manifest(directory)
    if gen is None:
        generator_options = {**manifest["generator"].get("options", {}), **generator_options}
    base = load_generator(gen or manifest["generator"]["id"], device=device, **generator_options) \
        if not isinstance(gen, Generator) else gen
    expected = manifest["generator"].get("weights_digest", "")
    if strict_digest and expected and base.weights_digest and base.weights_digest != expected:
        raise ArtifactError(
            f"artifact was trained on {manifest['generator']['id']} weights {expected[:12]}…, "
            f"but the generator given has weights {base.weights_digest[:12]}…",
            hint="use the same weights, or pass strict_digest=False to sample anyway")
    if not (directory / FLOWS).is_file():
        raise ArtifactError(f"'{directory}' has no {FLOWS}")
    tensors = load_file(str(directory / FLOWS), device=device)
    sampler: Generator = base
    for stage in manifest["stages"]:
        flow = LatentFlow(FlowConfig(**stage["flow"]))
        prefix = f"stage{stage['index']}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            flow.load_state_dict(state, strict=True)
        except RuntimeError as error:
            raise ArtifactError(f"stage {stage['index']} of '{directory}' does not match its "
                                f"manifest: {error}") from None
        context = [ContextParam(**c) for c in stage.get("context", [])]
        sampler = StageSampler(sampler, flow.to(device), stage["index"], stage["source"],
                               context).eval()
    if not isinstance(sampler, StageSampler):
        raise ArtifactError(f"'{directory}' has no trained stage")
    return Artifact(sampler, manifest)
