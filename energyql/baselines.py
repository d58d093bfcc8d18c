"""Samplers of one stage's target, with or without a trained flow, behind one function.

Every sampler aims at the same distribution over the latent ``u`` of a *base* generator:

    p(u) ∝ p0(u) · exp(-E(G(u)))

For a plain generator the base is that generator and ``E`` the energy given. For a trained
artifact the base is its **last stage's base** (the root generator for a one-stage artifact,
the previous stage's sampler otherwise) and ``E`` that stage's energy: the corrections below
make the last stage exact over the distribution it was trained on; earlier stages stay as
trained.

    rejection   base proposals, kept with probability exp(-(E - E_min)); exact when E_min
                bounds E (0 for predicate-only programs), or a hard ``threshold`` on E
    importance  sampling-importance-resampling (SIR) of a pool of base proposals
    langevin    unadjusted Langevin (ULA) on -log p0(u) + E(G(u)); ``metropolis=True`` or
                the name ``mala`` adds the Metropolis-Hastings correction (MALA)
    flow        the trained flow, feed-forward (no energy evaluated)
    flow+sir    SIR with the flow as the proposal: weights p0·exp(-E)/q use the flow's exact
                log-density q
    flow+imh    independent Metropolis-Hastings with the flow as the proposal

For distributional constraints (``uniform``, ``debias``, ``dist``) the exact target is the one
whose moments meet the constraint, so λ is refitted on the sampler's own proposals (the pool
itself for SIR, a pilot batch otherwise) unless ``fit_lambda=False``.

Example:
    >>> result = sample("flow+sir", artifact, n=64, seed=0)            # doctest: +SKIP
    >>> result.images.shape, result.stats["ess_fraction"]               # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from energyql.energies.base import EnergyTerm
from energyql.energies.lower import StageEnergy
from energyql.errors import SamplerError, check_choice, did_you_mean
from energyql.generators.base import Generator
from energyql.lang.visit import TermVisitor
from energyql.moments import fit_lambda
from energyql.sampler import Artifact, StageSampler, set_exact_lambdas
from energyql.target import StageTarget, effective_sample_size

SAMPLERS = ("rejection", "importance", "langevin", "mala", "flow", "flow+sir", "flow+imh")
FLOW_SAMPLERS = ("flow", "flow+sir", "flow+imh")
# The options each sampler takes (besides n, seed, batch, device, decode, fit_lambda), and
# the kind of value each option takes ("count": an int >= 0, "number": a finite number).
OPTIONS: dict[str, tuple[str, ...]] = {
    "rejection": ("e_min", "threshold", "max_proposals", "pilot"),
    "importance": ("pool",),
    "langevin": ("steps", "step_size", "metropolis", "pilot"),
    "mala": ("steps", "step_size", "pilot"),
    "flow": (),
    "flow+sir": ("pool",),
    "flow+imh": ("chains", "burn_in"),
}
_OPTION_KINDS = {"max_proposals": "count", "pilot": "count", "pool": "count", "steps": "count",
                 "chains": "count", "burn_in": "count", "threshold": "number",
                 "step_size": "number", "e_min": "number or 'pilot'", "metropolis": "boolean"}


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse an option the sampler does not declare, or a value of the wrong kind."""
    for key, value in options.items():
        if key not in OPTIONS[name]:
            raise SamplerError(f"sampler '{name}' does not take the option '{key}'",
                               hint=did_you_mean(key, OPTIONS[name], listing=f"options of {name}"))
        kind = _OPTION_KINDS[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) \
            and math.isfinite(value)
        fits = {"count": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                "number": number,
                "number or 'pilot'": number or value == "pilot",
                "boolean": isinstance(value, bool)}[kind]
        if not fits:
            raise SamplerError(f"sampler option {key}={value!r} is not a {kind}",
                               hint=f"e.g. --option {key}="
                                    + {"count": "4096", "number": "0.01",
                                       "number or 'pilot'": "pilot", "boolean": "true"}[kind])

# Images of a pool are kept (rather than decoded again) while they fit in this many floats.
_KEEP_IMAGES_FLOATS = 1 << 27


@dataclass
class SampleResult:
    """What a sampler returns.

    ``latents`` are latents of the base generator (see the module docstring), ``images`` their
    decoded images in [0, 1] (None with ``decode=False``), ``stats`` the sampler's figures:
    always ``sampler``, ``samples``, ``seconds``, ``proposals`` (latents decoded and judged),
    plus ``acceptance_rate``, ``ess``/``ess_fraction``, ``gradient_evals``... where they apply.
    """

    latents: torch.Tensor
    images: torch.Tensor | None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Pool:
    """Proposals with their log-importance-weights towards the target."""

    latents: torch.Tensor
    images: torch.Tensor | None
    log_weights: torch.Tensor
    energies: torch.Tensor


def _require_energy(target: StageTarget, name: str) -> StageEnergy:
    if target.energy is None:
        raise SamplerError(f"the '{name}' sampler needs the program's energy",
                           hint="pass energy=stage_energy(program, source), or an Artifact "
                                "whose manifest names its program")
    return target.energy


@torch.no_grad()
def _pool(target: StageTarget, size: int, rng: torch.Generator, *, batch: int, use_flow: bool,
          keep_images: bool) -> tuple[_Pool, dict]:
    """Draw ``size`` proposals; refit λ on them for constraints; return them weighted."""
    latents, images, pointwise, phis, log_ratios = [], [], [], [], []
    for start in range(0, size, batch):
        m = min(batch, size - start)
        u, log_ratio = target.propose(m, rng, use_flow=use_flow)
        x = target.base.decode(u)
        e, phi = target.measure(x, rng)
        latents.append(u.cpu())
        if keep_images:
            images.append(x.cpu())
        pointwise.append(e.double().cpu())
        log_ratios.append(log_ratio.double().cpu())
        if phi is not None:
            phis.append(phi.double().cpu())
    pointwise_all, log_ratio_all = torch.cat(pointwise), torch.cat(log_ratios)
    stats: dict = {}
    phi_all = torch.cat(phis) if phis else None
    if phi_all is not None:
        if target.fit:
            stats["lambda_fit"] = _fit(target, phi_all, log_ratio_all - pointwise_all)
        energies = pointwise_all - phi_all @ target.lam().double().cpu()
    else:
        energies = pointwise_all
    return _Pool(torch.cat(latents), torch.cat(images) if keep_images else None,
                 log_ratio_all - energies, energies), stats


def _fit(target: StageTarget, phi: torch.Tensor, log_weights: torch.Tensor) -> dict[str, Any]:
    fit = fit_lambda(phi, target.moments_target(), log_weights)
    target.constraints().set_lambda(fit.lam)
    return {"ess": round(fit.ess, 1), "samples": fit.samples,
            "max_moment_error": round(fit.max_error, 5)}


def _pilot_fit(target: StageTarget, rng: torch.Generator, pilot: int, batch: int) -> dict:
    """Fit λ on ``pilot`` base proposals before a sampler that cannot fit on its own draws."""
    if target.energy is None or not target.energy.has_constraints or not target.fit:
        return {}
    _, stats = _pool(target, pilot, rng, batch=batch, use_flow=False, keep_images=False)
    return {**stats, "pilot_proposals": pilot}


def _keep(target: StageTarget, size: int) -> bool:
    pixels = 3 * target.base.image_size ** 2 if target.base.image_size else target.dim
    return size * pixels <= _KEEP_IMAGES_FLOATS


@torch.no_grad()
def _decode(target: StageTarget, latents: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([target.base.decode(latents[i:i + batch].to(target.device)).cpu()
                      for i in range(0, len(latents), batch)])


def _systematic(log_weights: torch.Tensor, n: int, rng: torch.Generator) -> torch.Tensor:
    """Return ``n`` indices drawn by systematic resampling, in random order."""
    w = torch.softmax(log_weights.double(), 0)
    positions = (torch.rand(1, generator=rng, dtype=torch.float64) + torch.arange(n)) / n
    index = torch.searchsorted(torch.cumsum(w, 0), positions).clamp(max=len(w) - 1)
    return index[torch.randperm(n, generator=rng)]


def _resample(target: StageTarget, pool: _Pool, n: int, rng: torch.Generator, batch: int,
              decode: bool) -> tuple[torch.Tensor, torch.Tensor | None, dict]:
    index = _systematic(pool.log_weights, n, rng)
    latents = pool.latents[index]
    images = None
    if decode:
        images = pool.images[index] if pool.images is not None else _decode(target, latents, batch)
    ess = effective_sample_size(pool.log_weights)
    return latents, images, {"ess": round(ess, 1),
                             "ess_fraction": round(ess / len(pool.latents), 5),
                             "unique": int(index.unique().numel()),
                             "redecoded": 0 if pool.images is not None or not decode else n}


class _LowerBound(TermVisitor[float | None]):
    """A lower bound of an energy term over all images, or None if none is known."""

    def on_predicate_energy(self, term: Any) -> float | None:
        return 0.0  # -log p >= 0

    def on_clip_energy(self, term: Any) -> float | None:
        return 0.0  # 1 - cos >= 0

    def on_constraint_energy(self, term: Any) -> float | None:
        return -float(term.lam.max())  # φ is a probability vector

    def on_scaled_energy(self, term: Any) -> float | None:
        inner = self.visit(term.term)
        return None if inner is None or term.weight < 0 else term.weight * inner

    def _parts(self, term: Any) -> list[float] | None:
        parts = [self.visit(t) for t in term.terms]
        return None if any(p is None for p in parts) else [p for p in parts if p is not None]

    def on_sum_energy(self, term: Any) -> float | None:
        parts = self._parts(term)
        return None if parts is None else sum(parts)

    def on_soft_or_energy(self, term: Any) -> float | None:
        parts = self._parts(term)  # the soft OR loses at most log k
        return None if parts is None else min(parts) - math.log(len(parts))

    def fallback(self, term: Any) -> float | None:
        return None


def energy_lower_bound(energy: StageEnergy) -> float | None:
    """Return a lower bound of ``energy`` over all images, or None if none is known.

    Predicates (``-log p``) and CLIP energies are ≥ 0, a constraint ``-λ·φ`` is ≥ ``-max λ``
    (φ is a probability vector), sums add bounds and the soft OR loses at most ``log k``.
    """
    terms: list[EnergyTerm] = [*energy.pointwise, *energy.constraints]
    parts = [_LowerBound().visit(t) for t in terms]
    return None if any(p is None for p in parts) else float(sum(p for p in parts if p is not None))


def _rejection(target: StageTarget, n: int, rng: torch.Generator, *, batch: int, decode: bool,
               e_min: float | str | None = None, threshold: float | None = None,
               max_proposals: int | None = None, pilot: int = 4096) -> SampleResult:
    stage = _require_energy(target, "rejection")
    stats = _pilot_fit(target, rng, pilot, batch)
    bound = 0.0  # the lower bound of E that acceptance uses (unused with a threshold)
    if threshold is None:
        if e_min == "pilot":
            # An empirical minimum is no bound: samples with E below it are clipped to
            # acceptance 1, so the result is approximate. Users ask for it explicitly.
            with torch.no_grad():
                probe = torch.cat([target.energy_of(target.propose(min(batch, pilot - s), rng,
                                                                   use_flow=False)[0], rng).cpu()
                                   for s in range(0, pilot, batch)])
            bound = float(probe.min())
            stats["pilot_proposals"] = stats.get("pilot_proposals", 0) + pilot
        elif e_min is None:
            known = energy_lower_bound(stage)
            if known is None:
                raise SamplerError(
                    "rejection needs a lower bound of the energy; none is known for this program",
                    hint="pass e_min=BOUND (exact if it bounds E), e_min='pilot' (the minimum "
                         "over a pilot batch, approximate), or threshold=T (keep E <= T)")
            bound = known
        else:
            bound = float(e_min)  # check_options let only numbers and 'pilot' through
        stats["e_min"] = round(bound, 6)
    else:
        stats["threshold"] = threshold
    max_proposals = max_proposals if max_proposals is not None else 10_000 * n
    kept_latents, kept_images, proposals, accepted = [], [], 0, 0
    with torch.no_grad():
        while accepted < n and proposals < max_proposals:
            m = min(batch, max_proposals - proposals)
            u, _ = target.propose(m, rng, use_flow=False)
            x = target.base.decode(u)
            energy = target.total(*target.measure(x, rng))
            proposals += m
            if threshold is None:
                log_u = torch.rand(m, generator=rng).log().to(target.device)
                keep = log_u < -(energy - bound)
            else:
                keep = energy <= threshold
            kept_latents.append(u[keep].cpu())
            if decode:
                kept_images.append(x[keep].cpu())
            accepted += int(keep.sum())
    stats.update(proposals=proposals, accepted=accepted,
                 acceptance_rate=round(accepted / max(1, proposals), 6))
    if accepted < n:
        warnings.warn(f"rejection kept {accepted} of the {n} samples asked for after "
                      f"{proposals} proposals (max_proposals)", stacklevel=3)
    latents = torch.cat(kept_latents)[:n] if kept_latents else torch.empty(0, target.dim)
    images = torch.cat(kept_images)[:n] if decode and kept_images else None
    return SampleResult(latents, images, stats)


def _importance(target: StageTarget, n: int, rng: torch.Generator, *, batch: int, decode: bool,
                use_flow: bool = False, pool: int | None = None) -> SampleResult:
    _require_energy(target, "flow+sir" if use_flow else "importance")
    size = pool if pool is not None else (4 if use_flow else 16) * n
    if size < 1:
        raise SamplerError(f"pool must be at least 1, got {size}")
    drawn, stats = _pool(target, size, rng, batch=batch, use_flow=use_flow,
                         keep_images=decode and _keep(target, size))
    latents, images, resample_stats = _resample(target, drawn, n, rng, batch, decode)
    return SampleResult(latents, images, {**stats, "proposals": size, **resample_stats})


def _imh(target: StageTarget, n: int, rng: torch.Generator, *, batch: int, decode: bool,
         chains: int = 8, burn_in: int = 16) -> SampleResult:
    """Independent MH: ``chains`` chains, each fed ``n / chains + burn_in`` flow proposals.

    A proposal with importance weight w' replaces the state with weight w with probability
    min(1, w'/w); every state after burn-in is an output sample (repeats included).
    """
    stage = _require_energy(target, "flow+imh")
    chains = max(1, min(chains, n))
    steps = -(-n // chains) + burn_in
    stats: dict[str, Any] = {}
    if stage.has_constraints and target.fit:
        # Fit λ on one batch of flow proposals, weighted by p0/q (exact), before the chains.
        _, stats = _pool(target, max(batch, 1024), rng, batch=batch, use_flow=True,
                         keep_images=False)
        stats["pilot_proposals"] = max(batch, 1024)
    fit, target.fit = target.fit, False
    current_lw = torch.full((chains,), -math.inf, dtype=torch.float64)
    current_u = torch.zeros(chains, target.dim)
    current_x = None
    out_latents, out_images, accepted, proposed = [], [], 0, 0
    steps_per_batch = max(1, batch // chains)
    for step0 in range(0, steps, steps_per_batch):
        k = min(steps_per_batch, steps - step0)
        drawn, _ = _pool(target, k * chains, rng, batch=batch, use_flow=True, keep_images=decode)
        log_u = torch.rand(k, chains, generator=rng, dtype=torch.float64).log()
        for j in range(k):
            lw = drawn.log_weights[j * chains:(j + 1) * chains]
            take = log_u[j] < lw - current_lw
            # The first proposal of every chain is its starting state.
            take |= torch.isinf(current_lw)
            current_lw = torch.where(take, lw, current_lw)
            current_u = torch.where(take[:, None], drawn.latents[j * chains:(j + 1) * chains],
                                    current_u)
            if drawn.images is not None:  # kept exactly when decoding
                proposals_x = drawn.images[j * chains:(j + 1) * chains]
                current_x = proposals_x.clone() if current_x is None else torch.where(
                    take.view(-1, *[1] * (proposals_x.dim() - 1)), proposals_x, current_x)
            if step0 + j > 0:
                accepted += int(take.sum())
                proposed += chains
            if step0 + j >= burn_in:
                out_latents.append(current_u.clone())
                if current_x is not None:  # set from the first step on when decoding
                    out_images.append(current_x.clone())
    target.fit = fit
    latents = torch.stack(out_latents, 1).flatten(0, 1)[:n]
    images = torch.stack(out_images, 1).flatten(0, 1)[:n] if decode else None
    stats.update(proposals=steps * chains, chains=chains, burn_in=burn_in,
                 acceptance_rate=round(accepted / max(1, proposed), 5))
    return SampleResult(latents, images, stats)


def _langevin(target: StageTarget, n: int, rng: torch.Generator, *, batch: int, decode: bool,
              steps: int = 100, step_size: float = 0.01, metropolis: bool = False,
              pilot: int = 4096) -> SampleResult:
    """Langevin chains from the prior, one output sample per chain (its last state)."""
    _require_energy(target, "mala" if metropolis else "langevin")
    stats = _pilot_fit(target, rng, pilot, batch)
    h = float(step_size)
    if h <= 0 or steps < 0:
        raise SamplerError(f"langevin needs step_size > 0 and steps >= 0, got {h} and {steps}")

    def potential(u):
        u = u.detach().requires_grad_(True)
        with torch.enable_grad():
            value = -target.base.log_prior(u) + target.energy_of(u, rng)
            grad, = torch.autograd.grad(value.sum(), u)
        return value.detach(), grad.detach()

    out, accepted, proposed = [], 0, 0
    for start in range(0, n, batch):
        m = min(batch, n - start)
        u, _ = target.propose(m, rng, use_flow=False)
        value, grad = potential(u)
        for step in range(steps):
            noise = torch.randn(m, target.dim, generator=rng).to(target.device)
            proposal = u - h * grad + math.sqrt(2 * h) * noise
            if not metropolis:
                u = proposal
                if step + 1 < steps:  # the last state's gradient is never used
                    value, grad = potential(u)
                continue
            new_value, new_grad = potential(proposal)
            forward = (proposal - u + h * grad).pow(2).sum(1) / (4 * h)
            backward = (u - proposal + h * new_grad).pow(2).sum(1) / (4 * h)
            log_alpha = value - new_value + forward - backward
            log_v = torch.rand(m, generator=rng).log().to(target.device)
            take = log_v < log_alpha
            u = torch.where(take[:, None], proposal, u)
            value = torch.where(take, new_value, value)
            grad = torch.where(take[:, None], new_grad, grad)
            accepted += int(take.sum())
            proposed += m
        out.append(u.detach().cpu())
    latents = torch.cat(out) if out else torch.empty(0, target.dim)
    stats.update(proposals=n, steps=steps, step_size=h, metropolis=metropolis,
                 gradient_evals=n * (steps + 1 if metropolis else max(steps, 1)))
    if metropolis:
        stats["acceptance_rate"] = round(accepted / max(1, proposed), 5)
    images = _decode(target, latents, batch) if decode else None
    return SampleResult(latents, images, stats)


@torch.no_grad()
def _flow(target: StageTarget, n: int, rng: torch.Generator, *, batch: int,
          decode: bool) -> SampleResult:
    latents, images = [], []
    for start in range(0, n, batch):
        u, _ = target.propose(min(batch, n - start), rng, use_flow=True)
        latents.append(u.cpu())
        if decode:
            images.append(target.base.decode(u).cpu())
    return SampleResult(torch.cat(latents), torch.cat(images) if decode else None,
                        {"proposals": n})


def sample(name: str, source, energy: StageEnergy | None = None, *, n: int, seed: int = 0,
           batch: int = 256, device: str | None = None, decode: bool = True,
           fit_lambda: bool = True, **options) -> SampleResult:
    """Return ``n`` samples of the target by the sampler ``name`` (see :data:`SAMPLERS`).

    Arguments:
        name: ``rejection``, ``importance``, ``langevin``, ``mala``, ``flow``, ``flow+sir``
            or ``flow+imh``.
        source: a Generator (the base), or an Artifact / StageSampler (its last stage's flow
            and base; see the module docstring).
        energy: the target's energy over the base's images; default for an Artifact: its last
            stage's, from its manifest (:func:`stage_energy`). Not needed by ``flow``.
        n: samples wanted.
        seed: seeds every random draw (noise, acceptance, resampling, augmentations).
        batch: proposals per generator call.
        device: where to run (default: where the base generator is).
        decode: also return images (default); False returns latents only.
        fit_lambda: refit constraints' λ on the sampler's proposals (see the module docstring).
        **options: per sampler — rejection: ``e_min`` (a bound, or ``"pilot"``),
            ``threshold``, ``max_proposals``, ``pilot``; importance / flow+sir: ``pool``
            (default 16 n / 4 n); langevin / mala: ``steps``, ``step_size``, ``pilot``
            (and ``metropolis`` for langevin); flow+imh: ``chains``, ``burn_in``.

    Example:
        >>> art = energyql.load("runs/red-circles")                           # doctest: +SKIP
        >>> exact = sample("flow+imh", art, n=256, seed=1)                     # doctest: +SKIP
        >>> exact.stats["acceptance_rate"]                                     # doctest: +SKIP
    """
    check_choice(name, SAMPLERS, what="sampler", error=SamplerError)
    check_options(name, options)
    if n < 0:
        raise SamplerError(f"n must be >= 0, got {n}")
    if batch < 1:
        raise SamplerError(f"batch must be >= 1, got {batch}")
    if energy is None and name != "flow" and isinstance(source, Artifact):
        energy = stage_energy(source, device=device or str(source.sampler.device))
    base_device = (source.sampler if isinstance(source, Artifact) else source).device \
        if isinstance(source, (Artifact, Generator)) else "cpu"
    target = StageTarget.of(source, energy if name != "flow" else None,
                            device=str(device or base_device), need_flow=name in FLOW_SAMPLERS)
    target.fit = fit_lambda
    rng = torch.Generator().manual_seed(seed)
    runners: dict[str, Callable[..., SampleResult]] = {
        "rejection": _rejection,
        "importance": _importance,
        "langevin": _langevin,
        "mala": lambda *a, **k: _langevin(*a, metropolis=True, **k),
        "flow": _flow,
        "flow+sir": lambda *a, **k: _importance(*a, use_flow=True, **k),
        "flow+imh": _imh,
    }
    began = time.perf_counter()
    result = runners[name](target, n, rng, batch=batch, decode=decode, **options)
    result.stats = {"sampler": name, "samples": len(result.latents),
                    "seconds": round(time.perf_counter() - began, 4), **result.stats}
    if target.energy is not None and target.energy.has_constraints:
        result.stats["lambda"] = {c.text: [round(v, 4) for v in c.lam.tolist()]
                                  for c in target.constraints()}
    return result


def stage_energy(source, program=None, *, stage: int = -1, device: str = "cpu",
                 clip_copies: int = 4, models=None) -> StageEnergy:
    """Return one stage's energy (default: the last) with λ as its artifact trained it.

    Arguments:
        source: an Artifact (its program and λ come from the manifest) or a Generator.
        program: an expression or compiled program (default: the artifact's).
        stage: which stage, as an index into the program's stages.
        models: a :class:`~energyql.energies.ControlModels` to share between calls.
    """
    from energyql.energies import ControlModels, lower_stage
    from energyql.lang.api import compile as compile_program

    manifest = source.manifest if isinstance(source, Artifact) else None
    generator = source.sampler if isinstance(source, Artifact) else source
    if program is None:
        if manifest is None:
            raise SamplerError("no program given, and a plain generator has none")
        program = manifest.canonical
    if isinstance(program, str):
        program = compile_program(program)
    program = program.checked(generator.catalog)
    if manifest is None and len(program.stages) > 1 and not isinstance(generator, StageSampler):
        # Stage k's target lives over stage k-1's *trained* sampler, which a plain generator
        # does not have.
        raise SamplerError(f"the program has {len(program.stages)} stages; sampling its last "
                           f"stage needs the artifact trained for the stages before it",
                           hint="train it with `energyql run`, then sample the artifact")
    models = models or ControlModels(generator.catalog, device=device, clip_copies=clip_copies)
    try:
        chosen = program.stages[stage]
    except IndexError:
        raise SamplerError(f"the program has {len(program.stages)} stage(s); there is no "
                           f"stage {stage}",
                           hint=f"pass a stage from 0 to {len(program.stages) - 1}") from None
    index = stage if stage >= 0 else len(program.stages) + stage
    energy = lower_stage(chosen, models, program.stage_sliders(index))
    if manifest is not None and index < len(manifest.stages):
        set_exact_lambdas(energy, manifest.stages[index])
    return energy.to(device).eval()


def parse_options(pairs: list[str] | tuple[str, ...]) -> dict:
    """Return sampler options from ``KEY=VALUE`` strings (as a CLI passes them).

    Values become int, float or bool where they spell one (``pool=4096``, ``step_size=0.01``,
    ``metropolis=true``); anything else stays text (``e_min=pilot``).

    Example:
        >>> parse_options(["pool=4096", "e_min=pilot", "metropolis=true"])
        {'pool': 4096, 'e_min': 'pilot', 'metropolis': True}
    """
    from energyql.options import parse_key_values

    return parse_key_values(pairs, what="sampler option", error=SamplerError,
                            example="--option pool=4096 --option step_size=0.01")


__all__ = ["OPTIONS", "SAMPLERS", "SampleResult", "SamplerError", "check_options",
           "energy_lower_bound", "parse_options", "sample", "stage_energy"]
