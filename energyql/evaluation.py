"""Metrics of a generator or trained sampler, judged by the world's attribute model.

The JSON this returns is the stable interface of ``energyql eval --json`` (see docs/cli.md):
``samples``, ``attributes``, ``joint``, ``kl_to_target``, ``predicate_share``, ``energies``,
``collateral_drift``, ``ess`` and, for artifacts, ``base`` with the same figures for the base
generator. Where the generator can say what it drew (the embedded worlds), ``truth`` holds
``attributes``, ``joint``, ``kl_to_target`` and ``predicate_share`` computed from the ground
truth instead of the judge, and ``judge_agreement`` (attribute -> share where the judge's
argmax is the true value); ``base`` has its own ``truth``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from energyql.catalog import CATALOGS, Catalog
from energyql.distributed import Group
from energyql.distributed import current as current_group
from energyql.energies import ControlModels, StageEnergy, lower_stage
from energyql.energies.base import Features
from energyql.energies.combinators import ScaledEnergy
from energyql.energies.conditional import (
    identity_distance,
    inherited_context,
    sample_context,
)
from energyql.energies.predicate import PredicateEnergy
from energyql.energies.sliders import SLIDER
from energyql.generators.base import Generator
from energyql.lang import graph as g
from energyql.manifest import Manifest
from energyql.reference import BOOTSTRAP_REPLICATES, Reference, distribution
from energyql.reference import drift as reference_drift
from energyql.sampler import Artifact, StageSampler, context_grid, set_exact_lambdas
from energyql.target import StageTarget, closeness, effective_sample_size


def kl_divergence(p: list[float], q: list[float], floor: float = 1e-12) -> float:
    """Return KL(p || q) = Σ p log(p / q) for two distributions over the same values."""
    return float(sum(pi * math.log(pi / max(qi, floor)) for pi, qi in zip(p, q) if pi > 0))


def total_variation(p: list[float], q: list[float]) -> float:
    return 0.5 * float(sum(abs(a - b) for a, b in zip(p, q)))


def _histogram(indices: torch.Tensor, size: int,
               weights: torch.Tensor | None = None) -> list[float]:
    return distribution(indices, size, None if weights is None else weights.double()).tolist()


def _values(catalog: Catalog, name: str) -> tuple[str, ...]:
    """Return the values of an attribute already checked to be in ``catalog``."""
    attribute = catalog.attribute(name)
    if attribute is None:
        raise KeyError(f"the '{catalog.name}' catalog has no attribute '{name}'")
    return attribute.values


def joint_index(labels: dict[str, torch.Tensor], attrs: tuple[str, ...],
                catalog: Catalog) -> torch.Tensor:
    """Row-major index of each sample's joint value of ``attrs`` (itertools.product order)."""
    index = torch.zeros_like(labels[attrs[0]])
    for attr in attrs:
        index = index * len(_values(catalog, attr)) + labels[attr]
    return index


def joint_keys(attrs: tuple[str, ...], catalog: Catalog) -> list[str]:
    return [",".join(v) for v in itertools.product(*(_values(catalog, a) for a in attrs))]


class Judged:
    """Samples with their attribute labels, pointwise energies and predicate probabilities.

    ``truth``, where the generator can say what it drew, holds the same samples measured on
    their ground truth instead of the judge (labels and predicate outcomes; no energies).
    """

    def __init__(self, labels: dict[str, torch.Tensor], parts: dict[str, torch.Tensor],
                 predicate_probs: dict[str, torch.Tensor], log_weights: torch.Tensor | None,
                 truth: Judged | None = None, *, log_q_over_p0: torch.Tensor | None = None,
                 latents: torch.Tensor | None = None):
        self.labels = labels
        self.parts = parts
        self.predicate_probs = predicate_probs
        self.log_weights = log_weights
        self.truth = truth
        # log q(u)/p0(u) of each weighted row's latent (its flow against its stage's base),
        # and the latents themselves where asked for (judge(keep_latents=True)).
        self.log_q_over_p0 = log_q_over_p0
        self.latents = latents

    @property
    def n(self) -> int:
        return len(next(iter(self.labels.values())))


@torch.no_grad()
def _predicate_in(term: Any) -> PredicateEnergy | None:
    """The predicate a top-level term is, or weights (``2 * smiling``): its share is measured
    by the predicate's own text, whatever the weight."""
    while isinstance(term, ScaledEnergy):
        term = term.term
    return term if isinstance(term, PredicateEnergy) else None


@torch.no_grad()
def judge(generator: Generator | None, n: int, models: ControlModels, energies: list[StageEnergy],
          *, seed: int = 0, batch: int = 256, device: str = "cpu", group: Group | None = None,
          images: torch.Tensor | None = None, keep_latents: bool = False) -> Judged:
    """Sample ``n`` images and measure them with the attribute model and the program's energies.

    ``log_weights`` are, for a StageSampler, ``log p(u) - log q(u)`` of its last stage (the
    importance weights towards that stage's exact target); for a plain generator they are
    ``-E`` of the first stage (weights that turn base samples into the exact target).
    Under torchrun each rank judges its rows of every batch and the results are gathered.
    With ``images`` given (e.g. from a baseline sampler) those are judged instead, unweighted.
    ``keep_latents`` keeps the sampled latents ``u`` (``Judged.latents``, on the CPU).
    """
    group = group or current_group()
    augmentation = torch.Generator().manual_seed(seed + 1)
    attribute_model = models.attributes if models.catalog.attributes else None
    labels: dict[str, list] = {}
    parts: dict[str, list] = {}
    probs: dict[str, list] = {}
    weights: list[torch.Tensor] = []
    ratios: list[torch.Tensor] = []
    latents: list[torch.Tensor] = []
    true_labels: dict[str, list] = {}
    true_probs: dict[str, list] = {}
    batches: Iterator[tuple[torch.Tensor, torch.Tensor | None, int | None, dict | None,
                            torch.Tensor | None]]
    if images is not None:
        batches = ((images[s:s + batch][group.shard(len(images[s:s + batch]))].to(device), None,
                    None, None, None) for s in range(0, len(images), batch))
    elif generator is not None:
        batches = _sampled_batches(generator, n, seed, batch, device, group)
    else:
        raise ValueError("judge() needs a generator or images")
    for batch_images, log_ratio, weighting, truth, u in batches:
        if keep_latents and u is not None:
            latents.append(u.detach().float())
        # One Features per batch: every energy shares the attribute model's single pass.
        features = Features(batch_images, attribute_model, augmentation)
        if attribute_model is not None:
            for name, lp in features.attribute_log_probs().items():
                labels.setdefault(name, []).append(lp.argmax(1))
        if truth is not None:
            # The program's predicates evaluated on what was drawn: the same terms, fed
            # one-hot "log-probabilities" of the true values.
            known = {a.name: truth[a.name] for a in models.catalog.attributes if a.name in truth}
            for name, values in known.items():
                true_labels.setdefault(name, []).append(values)
            exact = Features(batch_images,
                             lambda _, known=known: _one_hot_log_probs(known, models.catalog))
            for stage_energy in energies:
                for term in map(_predicate_in, stage_energy.pointwise):
                    if term is not None and not stage_energy.is_conditional:
                        true_probs.setdefault(term.text, []).append(term.probability(exact))
        for k, stage_energy in enumerate(energies):
            if stage_energy.is_conditional:
                continue  # its energies need requested values; see conditional_figures
            total, stage_parts = stage_energy.total_and_parts(features)
            for text, value in stage_parts.items():
                parts.setdefault(text, []).append(value.float())
            for term in map(_predicate_in, stage_energy.pointwise):
                if term is not None:
                    probs.setdefault(term.text, []).append(term.probability(features))
            if k == weighting and log_ratio is not None:
                weights.append((log_ratio - total).float())
                ratios.append(-log_ratio.float())

    def collect(chunks: dict[str, list]) -> dict[str, torch.Tensor]:
        return {k: group.gather(torch.cat(v)).cpu() for k, v in chunks.items()}

    truth_judged = Judged(collect(true_labels), {}, collect(true_probs), None) \
        if true_labels else None
    return Judged(collect(labels), collect(parts), collect(probs),
                  group.gather(torch.cat(weights)).cpu() if weights else None, truth_judged,
                  log_q_over_p0=group.gather(torch.cat(ratios)).cpu() if ratios else None,
                  latents=group.gather(torch.cat(latents)).cpu() if latents else None)


def _one_hot_log_probs(truth: dict[str, torch.Tensor], catalog: Catalog) -> dict[str, torch.Tensor]:
    out = {}
    for name, values in truth.items():
        size = len(_values(catalog, name))
        out[name] = torch.nn.functional.one_hot(values, size).float().clamp(min=1e-12).log()
    return out


def _root(base: Generator) -> Generator:
    """The original generator under a chain of stages."""
    return base.root if isinstance(base, StageSampler) else base


def _root_latent(base: Generator, u: torch.Tensor,
                 context: torch.Tensor | None = None) -> torch.Tensor:
    """The original generator's latent for ``u``, a latent of ``base``; ``context`` holds
    the values of ``base``'s sliders, if it has any."""
    while isinstance(base, StageSampler):
        u = base.latent(u, context)
        context = inherited_context(base.base, base.context_params, context)
        base = base.base
    return u


def _sampled_batches(generator: Generator, n: int, seed: int, batch: int, device: str,
                     group: Group) -> Iterator[tuple[torch.Tensor, torch.Tensor, int, dict | None,
                                                     torch.Tensor]]:
    """Yield ``(images, log p0/q, stage index the weights aim at, ground truth or None,
    the latents u)``."""
    noise = torch.Generator().manual_seed(seed)
    contexts = torch.Generator().manual_seed(seed + 2)
    if isinstance(generator, StageSampler):
        target = StageTarget(generator.base, None, generator.flow, device=device)
        weighting = generator.index - 1
    else:
        target, weighting = StageTarget(generator, device=device), 0
    root = _root(target.base)
    knows_truth = getattr(root, "knows_truth", False)
    for start in range(0, n, batch):
        m = min(batch, n - start)
        eps = target.noise(m, noise, group.shard(m))
        flow_context = below = None
        if isinstance(generator, StageSampler) and generator.context_params:
            # A conditional sampler is judged over contexts drawn uniformly from its ranges.
            requested = sample_context(generator.context_params, len(eps), contexts).to(device)
            flow_context = generator.flow_context(requested, len(eps))
            below = inherited_context(target.base, generator.context_params, requested)
        u, log_ratio = target.push(eps, flow_context)
        truth = None
        if knows_truth:  # map to the root's latent only where the root can say what it drew
            truth = root.truth(_root_latent(target.base, u, below))
        yield target.base.decode(u, below), log_ratio, weighting, truth, u


def figures(judged: Judged, program, catalog: Catalog,
            targets: Mapping[str, Sequence[float]] | None = None) -> dict:
    """Return the attribute, joint, target, predicate and energy figures of judged samples.

    ``targets`` gives the estimated targets of deferred constraints (``restore(a)``, from
    ``debias(clip_bias)``) by their text; a deferred constraint without one is not measured.
    """
    result: dict = {"samples": judged.n, "attributes": {}, "joint": {}, "kl_to_target": {},
                    "tv_to_target": {}, "kl_to_uniform": {}, "predicate_share": {},
                    "energies": {}}
    for attribute in catalog.attributes:
        if attribute.name not in judged.labels:
            continue
        dist = _histogram(judged.labels[attribute.name], len(attribute.values))
        result["attributes"][attribute.name] = dict(zip(attribute.values, _round(dist)))
        uniform = [1 / len(dist)] * len(dist)
        result["kl_to_uniform"][attribute.name] = round(kl_divergence(dist, uniform), 5)
    products = {tuple(p) for p in itertools.combinations(catalog.attribute_names, 2)}
    constraints = [c for s in program.stages for c in s.constraints] \
        if program is not None else []
    products |= {tuple(c.attrs) for c in constraints if len(c.attrs) > 1}
    for attrs in sorted(products):
        if not all(a in judged.labels for a in attrs):
            continue
        size = math.prod(len(_values(catalog, a)) for a in attrs)
        dist = _histogram(joint_index(judged.labels, attrs, catalog), size)
        result["joint"][" x ".join(attrs)] = dict(zip(joint_keys(attrs, catalog), _round(dist)))
    for c in constraints:
        target = list((targets or {}).get(str(c), ())) if c.deferred else list(c.target)
        if not target or not all(a in judged.labels for a in c.attrs):
            continue
        dist = _histogram(joint_index(judged.labels, tuple(c.attrs), catalog), len(target))
        key = c.metric_key
        result["kl_to_target"][key] = round(kl_divergence(dist, target), 5)
        result["tv_to_target"][key] = round(total_variation(dist, target), 5)
    if judged.predicate_probs:
        holds = {t: p > 0.5 for t, p in judged.predicate_probs.items()}
        result["predicate_share"]["all"] = round(float(torch.stack(list(holds.values())).all(0)
                                                       .float().mean()), 4)
        for text, h in holds.items():
            result["predicate_share"][text] = round(float(h.float().mean()), 4)
    for text, values in judged.parts.items():
        result["energies"][text] = round(float(values.mean()), 4)
    return result


TRUTH_KEYS = ("attributes", "joint", "kl_to_target", "tv_to_target", "predicate_share")


def truth_figures(judged: Judged, program, catalog: Catalog,
                  targets: Mapping[str, Sequence[float]] | None = None) -> dict:
    """Return the judged figures recomputed from the ground truth, and ``judge_agreement``:
    attribute -> share of samples where the judge's argmax equals what was drawn."""
    if judged.truth is None:
        raise ValueError("these samples carry no ground truth")
    exact = figures(judged.truth, program, catalog, targets)
    result = {key: exact[key] for key in TRUTH_KEYS}
    result["judge_agreement"] = {
        name: round(float((judged.labels[name] == truth).float().mean()), 4)
        for name, truth in judged.truth.labels.items() if name in judged.labels}
    return result


def _round(values: list[float]) -> list[float]:
    return [round(v, 4) for v in values]


def _mentioned_attributes(program: g.Program) -> set[str]:
    return set(program.attributes)


def collateral_drift(sampled: Judged, base: Judged, program, catalog: Catalog, *,
                     on_truth: bool = False, reference: Reference | None = None) -> dict[str, Any]:
    """TV distance, per attribute the program does not mention, between the sampler and the
    exact target estimated by importance weights (:mod:`energyql.reference`).

    ``reference`` pools the base samples and the sampler's own (:func:`exact_reference`);
    without it the base samples alone, weighted by exp(-E), estimate the target (for
    predicates at weight 1 that is rejection sampling: the base conditioned on the predicate).
    With ``on_truth`` both sides are read from what the generator drew (the weights stay the
    judged energies': they define the target) and the result also says how many samples
    estimated the target, their effective sample size (which bounds its precision) and each
    TV's bootstrap standard error.
    """
    if base.log_weights is None or len(program.stages) != 1:
        return {}
    ours_side, exact_side = (sampled.truth, base.truth) if on_truth else (sampled, base)
    if ours_side is None or exact_side is None:
        return {}
    reference = reference or Reference.from_base(base.log_weights)
    mentioned = _mentioned_attributes(program)
    drift: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    for attribute in catalog.attributes:
        name = attribute.name
        if name in mentioned or name not in ours_side.labels or name not in exact_side.labels:
            continue
        ours = ours_side.labels[name]
        values = torch.cat([exact_side.labels[name], ours]) if reference.pooled \
            else exact_side.labels[name]
        tv, error = reference_drift(ours, values, reference, len(attribute.values),
                                    replicates=BOOTSTRAP_REPLICATES if on_truth else 0)
        drift[name] = round(tv, 4)
        errors[name] = round(error, 4)
    if on_truth:
        return {"tv": drift, "tv_se": errors, "base_samples": reference.base_rows,
                "base_ess": round(effective_sample_size(base.log_weights), 1),
                "flow_samples": reference.flow_rows, "reference_ess": round(reference.ess, 1)}
    return drift


#: Latents with more entries than this are not kept for a pooled reference (an image-shaped
#: latent would hold gigabytes over a base pool); the base samples alone estimate it there.
MAX_POOLED_LATENT = 4096


def poolable(sampler: Generator, energies: list[StageEnergy]) -> bool:
    """Whether a reference can pool ``sampler``'s own rows with base samples: a first stage
    without context, one stage's energies, a flat latent small enough to keep."""
    if not isinstance(sampler, StageSampler) or sampler.index != 1 or sampler.context_params:
        return False
    root = sampler.root
    return len(energies) == 1 and \
        math.prod(root.latent_shape or (root.latent_dim,)) <= MAX_POOLED_LATENT


@torch.no_grad()
def exact_reference(sampled: Judged, base: Judged, sampler: StageSampler) -> Reference | None:
    """Pool base samples (judged with ``keep_latents``) and a :func:`poolable` sampler's own
    rows into one estimate of the stage's exact target; None without weights or latents."""
    if base.latents is None or base.log_weights is None or sampled.log_weights is None \
            or sampled.log_q_over_p0 is None:
        return None
    root = sampler.root
    log_q = torch.cat([sampler.flow.log_prob(chunk.to(sampler.device)).double().cpu()
                       for chunk in base.latents.split(1024)])
    base_ratio = log_q - root.log_prior(base.latents).double()
    flow_neg_energy = sampled.log_weights.double() + sampled.log_q_over_p0.double()
    return Reference.pooled_with_flow(base.log_weights, base_ratio, flow_neg_energy,
                                      sampled.log_q_over_p0)


def _energies_for(program: g.Program, models: ControlModels,
                  manifest: Manifest | None) -> list[StageEnergy]:
    energies = []
    for k, stage in enumerate(program.stages):
        energy = lower_stage(stage, models, program.stage_sliders(k))
        if manifest is not None:
            set_exact_lambdas(energy, manifest.stages[k])
        energies.append(energy.eval())
    return energies


def evaluate(target: Artifact | Generator | str, *, program: g.Program | str | None = None,
             samples: int = 2000, base_samples: int | None = None, seed: int = 0,
             device: str = "cpu", clip_copies: int = 4, clip: str | None = None,
             face_attributes: str | None = None,
             setting: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Return the eval figures of an artifact (with its base side by side) or a generator.

    An artifact with sliders is measured at one ``setting`` (``{"p": 0.3}``; sliders not
    given at their middles): every figure, targets included, is that setting's, and
    ``result["setting"]`` says which it was.

    Arguments:
        target: an Artifact, an artifact directory, or a Generator.
        program: the program to measure against (default: the artifact's own).
        samples: how many samples to judge.
        base_samples: base samples for the base figures and the exact-target estimate
            (default: 4 x samples, since the exact target is estimated by reweighting).
        clip, face_attributes: the judges' CLIP spec and face-attribute backend (see
            :class:`~energyql.energies.ControlModels`; default: the environment's, the world's).
    """
    from energyql.lang.api import compile as compile_program
    from energyql.sampler import load

    if isinstance(target, str):
        target = load(target, device=device)
    if isinstance(target, Artifact) and (target.sliders or setting):
        target = target.at(setting or {})
    at = target.setting if isinstance(target, Artifact) else None
    artifact = target if isinstance(target, Artifact) else None
    generator: Generator = target.sampler if isinstance(target, Artifact) else target
    catalog = CATALOGS[generator.catalog]
    if program is None and artifact is not None:
        program = compile_program(artifact.manifest.canonical)
    if isinstance(program, str):
        program = compile_program(program)
    program = program.checked(catalog) if program is not None else None
    models = ControlModels(catalog, device=device, clip_copies=clip_copies, clip=clip,
                           face_attributes=face_attributes)
    energies = _energies_for(program, models, artifact.manifest if artifact else None) \
        if program is not None else []
    generator = generator.to(device).eval()
    # Restore targets (debias(clip_bias)) were estimated when training: the manifest has them.
    targets = {text: target for stage in artifact.manifest.stages
               for text, target in (stage.targets or {}).items()} if artifact else {}
    judged = judge(generator, samples, models, energies, seed=seed, device=device)
    result = figures(judged, program, catalog, targets)
    if at is not None:
        result["setting"] = at
    if judged.truth is not None:
        result["truth"] = truth_figures(judged, program, catalog, targets)
    result["ess"] = {}
    if artifact is not None:
        sampler = artifact.sampler  # the generator judged above
        root = sampler.root
        pooled = poolable(sampler, energies)
        base_judged = judge(root, base_samples or 4 * samples, models, energies, seed=seed + 1,
                            device=device, keep_latents=pooled)
        result["base"] = figures(base_judged, program, catalog, targets)
        if base_judged.truth is not None:
            result["base"]["truth"] = truth_figures(base_judged, program, catalog, targets)
        if program is not None:
            reference = exact_reference(judged, base_judged, sampler) if pooled else None
            result["collateral_drift"] = collateral_drift(judged, base_judged, program, catalog,
                                                          reference=reference)
            truth_drift = collateral_drift(judged, base_judged, program, catalog, on_truth=True,
                                           reference=reference)
            if truth_drift:
                result.setdefault("truth", {})["collateral_drift"] = truth_drift
        if judged.log_weights is not None:
            result["ess"][f"stage {sampler.index}"] = round(
                effective_sample_size(judged.log_weights) / len(judged.log_weights), 4)
            result["closeness"] = {f"stage {sampler.index}": closeness(judged.log_weights)}
        if any(p.control != SLIDER for p in sampler.context_params):
            conditional = conditional_figures(sampler, models, seed=seed, device=device)
            result.setdefault("truth", {}).update(conditional.pop("truth", {}))
            result.update(conditional)
    return result


def evaluate_images(images: torch.Tensor, catalog: Catalog | str, *, program=None,
                    device: str = "cpu", seed: int = 0, clip_copies: int = 4,
                    clip: str | None = None, face_attributes: str | None = None) -> dict:
    """Return the eval figures (no base, no weights) of given images, e.g. a baseline's
    (``clip``, ``face_attributes``: as for :func:`evaluate`)."""
    from energyql.lang.api import compile as compile_program

    catalog = CATALOGS[catalog] if isinstance(catalog, str) else catalog
    if isinstance(program, str):
        program = compile_program(program)
    program = program.checked(catalog) if program is not None else None
    models = ControlModels(catalog, device=device, clip_copies=clip_copies, clip=clip,
                           face_attributes=face_attributes)
    energies = _energies_for(program, models, None) if program is not None else []
    judged = judge(None, len(images), models, energies, seed=seed, device=device, images=images)
    return figures(judged, program, catalog)


@torch.no_grad()
def conditional_figures(sampler: StageSampler, models: ControlModels, *, rows: int = 64,
                        steps: int = 5, seed: int = 0, device: str = "cpu") -> dict:
    """Pose error and identity distances of a conditional sampler (PromptGen's measures).

    Each parameter is swept over ``steps`` values across its range (the others mid-range) for
    ``rows`` noises. ``pose_error``: parameter → mean |reading − requested|;
    ``identity_within``: mean √(2 − 2cos) between the identity embeddings of one noise at
    different values of the first parameter; ``identity_between``: the same between different
    noises at the same value.
    """
    params = [p for p in sampler.context_params if p.control != SLIDER]  # pose, not sliders
    catalog = models.catalog
    pose_model = models.pose(catalog.control(params[0].control))
    seeded = torch.Generator().manual_seed(seed)
    noise = torch.randn(rows, sampler.latent_dim, generator=seeded).to(device)
    root = sampler.root
    knows = getattr(root, "knows_truth", False)
    pose_error, true_error, sweeps, truths = {}, {}, {}, {}
    for param in params:
        values = context_grid(param.low, param.high, steps)  # float32 would leave the range
        contexts = [sampler.context_tensor({param.name: v}, rows).to(device) for v in values]
        images = [sampler.decode(noise, c) for c in contexts]
        readings = [pose_model(x)[param.name] for x in images]
        pose_error[param.name] = round(float(torch.stack(
            [(r - v).abs().mean() for r, v in zip(readings, values)]).mean()), 4)
        sweeps[param.name] = images
        if knows:  # what was drawn at each requested value
            truths[param.name] = [root.truth(_root_latent(
                sampler.base, sampler.latent(noise, c),
                inherited_context(sampler.base, sampler.context_params, c))) for c in contexts]
            if param.name in truths[param.name][0]:
                true_error[param.name] = round(float(torch.stack(
                    [(t[param.name] - v).abs().mean()
                     for t, v in zip(truths[param.name], values)]).mean()), 4)
    result: dict[str, Any] = {"pose_error": pose_error}
    pairs = [(i, j) for i in range(steps) for j in range(i + 1, steps)]
    if catalog.keepable("identity"):
        embed = models.identity("identity")
        grid = torch.stack([embed(x) for x in sweeps[params[0].name]], dim=1)  # rows, steps, d
        within = torch.stack([identity_distance(grid[:, i], grid[:, j]) for i, j in pairs]).mean()
        between = identity_distance(grid, grid.roll(1, dims=0)).mean()
        result["identity_within"] = round(float(within), 4)
        result["identity_between"] = round(float(between), 4)
    if knows:
        truth: dict[str, Any] = {"pose_error": true_error}
        factors = getattr(root, "identity_factors", ())
        if factors:
            # Identity as drawn: Euclidean distance between the identity factors of one noise
            # across the sweep, against that between noises.
            drawn = torch.stack([torch.stack([t[f] for f in factors], 1)
                                 for t in truths[params[0].name]], 1)  # rows, steps, factors
            within = torch.stack([(drawn[:, i] - drawn[:, j]).norm(dim=1)
                                  for i, j in pairs]).mean()
            between = (drawn - drawn.roll(1, dims=0)).norm(dim=2).mean()
            truth["identity_within"] = round(float(within), 4)
            truth["identity_between"] = round(float(between), 4)
        kept = [a.name for a in catalog.attributes if a.name in truths[params[0].name][0]]
        if kept:
            # The share of noises whose drawn attributes stay the same across the whole sweep
            # (an expression may change with pose; the person should not).
            labels = torch.stack([torch.stack([t[a] for a in kept], 1)
                                  for t in truths[params[0].name]], 1)  # rows, steps, attrs
            same = (labels == labels[:, :1]).all(dim=1)                  # rows, attrs
            truth["attributes_kept"] = {a: round(float(same[:, i].float().mean()), 4)
                                        for i, a in enumerate(kept)}
        result["truth"] = truth
    return result


#: Settings per slider that ``slider_sweep`` measures (the report's requested-vs-achieved).
SWEEP_POINTS = 5


def slider_sweep(artifact: Artifact, *, points: int = SWEEP_POINTS, samples: int = 500,
                 seed: int = 0, device: str = "cpu", clip: str | None = None,
                 face_attributes: str | None = None) -> dict[str, list[dict[str, Any]]]:
    """Measure an artifact with sliders along each slider (the others at their middles).

    For each slider and each of ``points`` settings from its low to its high end: what each
    dist entry it sets asked for (``requested``) and got, judged and (embedded worlds) on
    ground truth, the predicate shares, and the flow's ESS/N and KL̂ at that setting.
    """
    from energyql.lang.api import compile as compile_program

    program = compile_program(artifact.manifest.canonical, gen=artifact.sampler.catalog)
    out: dict[str, list[dict[str, Any]]] = {}
    for slider in program.sliders:
        rows = []
        for value in context_grid(slider.low, slider.high, points):
            view = artifact.at({slider.name: value})
            result = evaluate(view, samples=samples, base_samples=samples, seed=seed,
                              device=device, clip=clip, face_attributes=face_attributes)
            row: dict[str, Any] = {"value": value, "requested": {}, "judged": {}, "truth": {}}
            # A dist slider of an earlier stage is measured on the final samples too.
            for constraint in (c for stage in program.stages for c in stage.constraints):
                for cell, cell_slider in constraint.sliders:
                    if cell_slider.name != slider.name:
                        continue
                    key = f"{' x '.join(constraint.attrs)} = {' x '.join(constraint.cells[cell])}"
                    row["requested"][key] = round(value, 6)
                    row["judged"][key] = _cell_share(result, constraint, cell)
                    if "truth" in result:
                        row["truth"][key] = _cell_share(result["truth"], constraint, cell)
            row["predicate_share"] = result.get("predicate_share", {})
            row["truth_predicate_share"] = result.get("truth", {}).get("predicate_share", {})
            closeness_at: dict[str, Any] = next(iter(result.get("closeness", {}).values()), {})
            row["ess_fraction"] = closeness_at.get("ess_fraction")
            row["kl"] = closeness_at.get("kl")
            row["kl_to_target"] = result.get("kl_to_target", {})
            if "truth" in result:
                row["truth_kl_to_target"] = result["truth"].get("kl_to_target", {})
            rows.append(row)
        out[slider.name] = rows
    return out


def _cell_share(figures_: Mapping[str, Any], constraint: g.Constraint, cell: int) -> float | None:
    """The share of one cell of a constraint's joint in a result's attributes or joints."""
    values = constraint.cells[cell]
    if len(constraint.attrs) == 1:
        return figures_.get("attributes", {}).get(constraint.attrs[0], {}).get(values[0])
    return figures_.get("joint", {}).get(" x ".join(constraint.attrs), {}).get(",".join(values))
