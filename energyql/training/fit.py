"""λ of a stage's constraints, fitted by moment matching, and the mass-covering start.

:func:`fit_constraints` fits λ on base samples before training and refits it on the flow's own
samples during training (exact importance weights ``p0/q``); the stage's ConstraintList keeps
the views (trained, exact, tempered shift). :func:`warm_start` optionally starts the flow on
the target's modes by weighted maximum likelihood on judged base samples.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, cast

import torch

from energyql.distributed import Group
from energyql.errors import TrainingError
from energyql.manifest import FitRecord
from energyql.moments import MomentFit, fit_lambda
from energyql.target import StageTarget, effective_sample_size
from energyql.training.config import TrainConfig

# Below this share of effective samples a moment estimate is not trusted.
LOW_ESS_FRACTION = 0.05
# The mass-covering start: from this effective pool size on, it is fitted until a held-out
# part stops improving (checked every START_CHECK_EVERY steps, START_PATIENCE times in a
# row, at most START_MAX_STEPS); below it, warm_start_steps fixed steps.
VALIDATED_START_ESS = 500
START_CHECK_EVERY = 25
START_PATIENCE = 3
START_MAX_STEPS = 1000


def features_in_batches(target: StageTarget, n: int, batch: int, seed_generator: torch.Generator,
                         group: Group, *, use_flow: bool
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw n samples; return (phi, pointwise energy, log p0(z) - log q(z), z) as CPU tensors.

    Noise comes from its own stream, drawn for whole batches on every rank, so that N ranks
    together judge exactly the samples one process would, and each batch is gathered at once,
    so that the rows come back in the order one process would have them.
    """
    noise = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=seed_generator)))
    phis: list[torch.Tensor] = []
    energies: list[torch.Tensor] = []
    log_ratios: list[torch.Tensor] = []
    latents: list[torch.Tensor] = []
    with torch.no_grad():
        for start in range(0, n, batch):
            m = min(batch, n - start)
            z, log_ratio = target.propose(m, noise, use_flow=use_flow, rows=group.shard(m))
            pointwise, phi = target.measure(target.decode(z), seed_generator)
            if phi is None:
                phi = torch.zeros(len(z), 0, device=z.device)
            for rows, out in ((phi, phis), (pointwise, energies), (log_ratio, log_ratios),
                              (z, latents)):
                out.append(group.gather(rows).cpu())
    return torch.cat(phis), torch.cat(energies), torch.cat(log_ratios), torch.cat(latents)


def fit_constraints(target: StageTarget, n: int, config: TrainConfig,
                    generator: torch.Generator, group: Group | None = None, *,
                    use_flow: bool) -> MomentFit:
    """Refit every constraint's λ so the stage's final distribution meets its targets.

    With ``use_flow=False`` the samples come from the base generator and the importance
    weights are ``exp(-E_pointwise)``; with the flow they come from the flow and the weights
    also carry ``p0/q``, which is exact because the flow's density is known.

    The exact fit (what evaluation and corrected samplers aim at) is ``λ - offset``. With a
    tempered target (``config.temper``) the flow trains with λ fitted for that target, and
    the difference is kept in the constraints' ``shift``.
    """
    constraints = target.constraints()
    phi, pointwise, log_ratio, _ = features_in_batches(
        target, n, config.batch * 4, generator, group or Group(), use_flow=use_flow)
    # All constraints are fitted jointly: their features may overlap
    # (e.g. debias(a) & uniform(a x b)).
    moments = target.moments_target()
    fit = fit_lambda(phi, moments, -pointwise + log_ratio)
    trained = fit if not config.tempered else \
        fit_lambda(phi, moments, -config.temper * pointwise + log_ratio)
    feedback = constraints.packed("offset") - constraints.packed("shift")
    if use_flow:
        # The importance-weighted fit is exact for the target, but the flow only approximates
        # the target. Feed back what the flow's own samples show, as an offset that tilts the
        # flow further until its samples meet the target.
        flow_moments = phi.mean(0).clamp(min=1e-4)
        feedback = feedback + config.feedback_gain * (moments.clamp(min=1e-4).log()
                                                      - flow_moments.log())
        feedback = feedback - feedback.mean()
        fit = replace(fit, flow_moments=flow_moments)
    shift = trained.lam - fit.lam
    fit = replace(fit, lam=trained.lam + feedback)
    constraints.set_lambda(fit.lam, feedback + shift, shift)
    return fit


def _fit_until_held_out_stops(flow: Any, config: TrainConfig,
                              batch_loss: Callable[[], torch.Tensor],
                              held_out_nll: Callable[[], float] | None,
                              max_steps: int) -> tuple[list[float], float]:
    """Weighted maximum likelihood steps on ``batch_loss`` (Adam at ``config.lr``); with
    ``held_out_nll``, checked every START_CHECK_EVERY steps, stopped after START_PATIENCE
    checks without improvement, and the best state restored. Return the losses and the best
    held-out value (inf without one)."""
    optimizer = torch.optim.Adam([p for p in flow.parameters() if p.requires_grad], lr=config.lr)
    best = held_out_nll() if held_out_nll is not None else math.inf
    best_state = {k: v.clone() for k, v in flow.state_dict().items()}
    worse = 0
    nll: list[float] = []
    for step in range(1, max_steps + 1):
        loss = batch_loss()
        if not torch.isfinite(loss):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(flow.parameters(), config.grad_clip)
        optimizer.step()
        nll.append(round(float(loss.detach()), 3))
        if held_out_nll is not None and step % START_CHECK_EVERY == 0:
            value = held_out_nll()
            if value < best - 1e-3:
                best, worse = value, 0
                best_state = {k: v.clone() for k, v in flow.state_dict().items()}
            else:
                worse += 1
                if worse >= START_PATIENCE:
                    break
    if held_out_nll is not None:
        flow.load_state_dict(best_state)  # the fit that did best on the held-out part
    return nll, best


@dataclass(frozen=True)
class SliderPool:
    """Base samples of a slider stage, judged once so that their energy at any setting is a
    sum of columns: φ, the fixed part of the pointwise energy, and each slider-weighted term
    unweighted (``scaled[:, k]``, weighted by ``weights[k]`` times context column
    ``columns[k]``)."""

    z: torch.Tensor
    phi: torch.Tensor
    fixed: torch.Tensor
    scaled: torch.Tensor
    weights: tuple[float, ...]
    columns: tuple[int, ...]

    def pointwise(self, context: torch.Tensor) -> torch.Tensor:
        """The pointwise energy ``(B, N)`` of every pool sample at each setting ``(B, P)``."""
        energy = self.fixed.double()[None].expand(len(context), -1)
        for k, (weight, column) in enumerate(zip(self.weights, self.columns)):
            energy = energy + weight * context[:, column].double()[:, None] \
                * self.scaled[:, k].double()[None]
        return energy


def judge_slider_pool(target: StageTarget, n: int, config: TrainConfig,
                      generator: torch.Generator, group: Group | None = None) -> SliderPool:
    """Draw ``n`` base samples and judge them as :class:`SliderPool` columns."""
    from energyql.energies.sliders import SliderScaledEnergy

    energy = cast(Any, target.energy)
    group = group or Group()
    noise = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    scaled = energy.weight_slider_terms
    fixed_terms = [t for t in energy.pointwise if not isinstance(t, SliderScaledEnergy)]
    latents: list[torch.Tensor] = []
    phis: list[torch.Tensor] = []
    fixed: list[torch.Tensor] = []
    parts: list[torch.Tensor] = []
    batch = config.batch * 4
    with torch.no_grad():
        for start in range(0, n, batch):
            m = min(batch, n - start)
            z, _ = target.propose(m, noise, use_flow=False, rows=group.shard(m))
            features = energy.features(target.base.decode(z).float(), generator)
            zero = torch.zeros(len(z), device=z.device)
            phi = energy.phi(features) if energy.has_constraints else zero[:, None][:, :0]
            for rows, out in ((z, latents), (phi, phis),
                              (sum((t(features) for t in fixed_terms), zero), fixed),
                              (torch.stack([t.term(features) for t in scaled], 1) if scaled
                               else zero[:, None][:, :0], parts)):
                out.append(group.gather(rows).cpu())
    return SliderPool(torch.cat(latents), torch.cat(phis), torch.cat(fixed), torch.cat(parts),
                      tuple(t.weight for t in scaled), tuple(t.column for t in scaled))


def fit_lambda_grid(target: StageTarget, n: int, config: TrainConfig,
                    generator: torch.Generator, group: Group | None = None) -> MomentFit:
    """Fit λ exactly at every setting of the stage's λ grid (sliders); return the middle's fit.

    One pool of ``n`` base samples is judged once (:class:`SliderPool`), so every grid point
    is one moment fit on the same samples (importance weights ``exp(-E_pointwise(c))``) for
    the target at that setting. The grid is the exact λ(c) at its points; the flow trains
    with it interpolated in between.
    """
    if target.conditional_base:
        return _fit_lambda_grid_per_setting(target, n, config, generator, group or Group())
    energy = cast(Any, target.energy)
    grid = energy.lambda_grid
    constraints = target.constraints()
    pool = judge_slider_pool(target, n, config, generator, group)
    params = energy.context

    def fit_at(values: dict[str, float]) -> MomentFit:
        row = torch.tensor([[values[p.name] for p in params]], dtype=torch.float64)
        return fit_lambda(pool.phi, constraints.target_at(values), -pool.pointwise(row)[0])

    rows = [fit_at(values).lam for values in grid.setting_values(params)]
    grid.values.copy_(torch.stack(rows).to(grid.values))
    fit = fit_at({p.name: p.middle for p in params})
    constraints.set_lambda(fit.lam.float(), torch.zeros_like(fit.lam).float(),
                           torch.zeros_like(fit.lam).float())
    return fit


#: Fewest base samples a λ fit rests on at one grid point when the base moves with the
#: setting (a stage after a slider stage draws a pool per point).
MIN_SETTING_POOL = 1024


def grid_fit_images(target: StageTarget, n: int) -> int:
    """The images :func:`fit_lambda_grid` decodes for a pool of ``n``: ``n``, or a pool per
    grid point (at least MIN_SETTING_POOL each) when the base moves with the setting."""
    points = len(cast(Any, target.energy).lambda_grid.values)
    return points * max(MIN_SETTING_POOL, n // points) if target.conditional_base else n


def _fit_lambda_grid_per_setting(target: StageTarget, n: int, config: TrainConfig,
                                 generator: torch.Generator, group: Group) -> MomentFit:
    """:func:`fit_lambda_grid` for a stage after a slider stage: its base's samples move with
    the earlier slider, so one pool cannot serve every setting. Each grid point gets a pool
    of its own (``n`` spread over the points, at least MIN_SETTING_POOL each), decoded at
    that setting. Return the middle's fit, with the smallest ESS any point's fit rested on."""
    energy = cast(Any, target.energy)
    grid, constraints, params = energy.lambda_grid, target.constraints(), energy.context
    settings = grid.setting_values(params)
    per = grid_fit_images(target, n) // len(settings)
    noise = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    fits = []
    with torch.no_grad():
        for values in settings:
            phis, energies = [], []
            for start in range(0, per, config.batch * 4):
                m = min(config.batch * 4, per - start)
                row = torch.tensor([[values[p.name] for p in params]],
                                   device=target.device).expand(m, -1)
                z, _ = target.propose(m, noise, use_flow=False, rows=group.shard(m))
                rows = row[group.shard(m)]
                features = energy.features(target.decode(z, rows).float(), generator,
                                           context=rows)
                phis.append(group.gather(energy.phi(features)).cpu())
                energies.append(group.gather(energy.pointwise_energy(features)).cpu())
            fits.append(fit_lambda(torch.cat(phis), constraints.target_at(values),
                                   -torch.cat(energies)))
    grid.values.copy_(torch.stack([f.lam for f in fits]).to(grid.values))
    middle = fits[min(range(len(settings)), key=lambda k: sum(
        abs(settings[k][p.name] - p.middle) for p in params))]
    constraints.set_lambda(middle.lam.float(), torch.zeros_like(middle.lam).float(),
                           torch.zeros_like(middle.lam).float())
    return replace(middle, ess=min(f.ess_fraction for f in fits) * middle.samples)


#: Settings per slider at which a slider stage's feedback is measured (3 per axis for more
#: than one slider); interpolated onto the λ grid.
FEEDBACK_POINTS = 5


def refit_grid_offsets(target: StageTarget, config: TrainConfig,
                       generator: torch.Generator) -> tuple[int, float]:
    """The feedback of a slider stage: at every setting of its λ grid, draw the flow's samples
    (``refit_samples`` in all, spread over a coarse grid of FEEDBACK_POINTS per slider, so
    that each estimate rests on enough samples), compare their mean φ with the setting's
    target, and add ``feedback_gain · log(target / flow moments)`` (centred per setting,
    interpolated onto the λ grid) to the grid's training offset. The exact fit is untouched:
    evaluation aims at it. Return the images decoded and the largest moment error seen."""
    from energyql.energies.conditional import normalize_context
    from energyql.energies.sliders import LambdaGrid

    energy = cast(Any, target.energy)
    grid, constraints = energy.lambda_grid, target.constraints()
    params = energy.context
    coarse = LambdaGrid(grid.params, grid.columns, grid.values.shape[1],
                        points=FEEDBACK_POINTS if len(grid.params) == 1 else 3)
    settings = coarse.setting_values(params)
    per = max(8, config.refit_samples // len(settings))
    steps, worst = [], 0.0
    with torch.no_grad():
        for values in settings:
            row = torch.tensor([[values[p.name] for p in params]]).expand(per, -1)
            eps = target.noise(per, generator)
            z, _ = target.push(eps, normalize_context(params, row).to(target.device))
            features = energy.features(target.decode(z, row.to(target.device)).float(),
                                       generator, context=row.to(target.device))
            flow_moments = energy.phi(features).mean(0).cpu().clamp(min=1e-4)
            wanted = constraints.target_at(values)
            worst = max(worst, float((flow_moments - wanted).abs().max()))
            step = config.feedback_gain * (wanted.clamp(min=1e-4).log() - flow_moments.log())
            steps.append(step - step.mean())
    coarse.values.copy_(torch.stack(steps).to(coarse.values))
    fine = torch.tensor([[v[p.name] for p in params] for v in grid.setting_values(params)],
                        dtype=coarse.values.dtype)
    grid.offset.add_(coarse.at(fine).to(grid.offset))
    return per * len(settings), worst


def slider_warm_start(target: StageTarget, config: TrainConfig, generator: torch.Generator,
                      group: Group | None = None,
                      on_pool: Callable[[SliderPool, Callable[[torch.Tensor], torch.Tensor]],
                                        object] | None = None
                      ) -> dict[str, Any]:
    """The mass-covering start of a slider stage: weighted maximum likelihood of the
    conditional flow on judged base samples, each row at its own setting.

    Every step draws settings uniformly from the sliders' ranges and, for each, one pool
    sample from that setting's exact target weights ``exp(-E(z; c) + λ(c)·φ(z))``, so the
    flow starts near the target at every setting; reverse KL then refines it. Fitted until a
    held-out fifth of the pool, measured at 8 fixed settings, stops improving. ``on_pool``
    receives the judged pool and a function from settings ``(B, P)`` to the pool's
    log-weights ``(B, N)`` at each (the chains' seed).
    """
    from energyql.energies.conditional import normalize_context, sample_context

    flow = cast(Any, target.flow)
    energy = cast(Any, target.energy)
    draws = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    pool = judge_slider_pool(target, config.warm_start_samples, config, generator, group)
    params, grid = energy.context, energy.lambda_grid

    def log_weights(context: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        log_w = -pool.pointwise(context)[:, rows]
        if grid is not None:
            log_w = log_w + grid.at(context).double().cpu() @ pool.phi[rows].double().T
        return log_w

    if on_pool is not None:
        everyone = torch.arange(len(pool.z))
        on_pool(pool, lambda context: log_weights(context.double().cpu(), everyone))
    order = torch.randperm(len(pool.z), generator=draws)
    held_out, fit_rows = order[: len(pool.z) // 5], order[len(pool.z) // 5:]
    checks = sample_context(params, 8, draws)
    held_weights = torch.softmax(log_weights(checks, held_out), 1).float()
    ess = float((1 / (torch.softmax(log_weights(checks, fit_rows), 1) ** 2).sum(1)).min())
    record: dict[str, Any] = {"samples": len(pool.z), "min_ess": round(ess, 1), "steps": 0}
    if ess < 2:
        return record
    device = config.device
    held_z = pool.z[held_out].to(device)

    def held_out_nll() -> float:
        with torch.no_grad():
            total = 0.0
            for k in range(len(checks)):
                flow_context = normalize_context(params, checks[k:k + 1].expand(len(held_z), -1))
                total -= float((held_weights[k].to(device)
                                * flow.log_prob(held_z, flow_context.to(device))).sum())
            return total / len(checks)

    def batch_loss() -> torch.Tensor:
        context = sample_context(params, config.batch, draws)
        weights = torch.softmax(log_weights(context, fit_rows), 1)
        rows = fit_rows[torch.multinomial(weights, 1, generator=draws)[:, 0]]
        return -flow.log_prob(pool.z[rows].to(device),
                              normalize_context(params, context).to(device)).mean()

    nll, best = _fit_until_held_out_stops(flow, config, batch_loss, held_out_nll,
                                          START_MAX_STEPS)
    record.update(steps=len(nll), held_out_nll=round(best, 3),
                  nll_first=nll[0] if nll else None, nll_last=nll[-1] if nll else None)
    return record


@dataclass(frozen=True)
class JudgedPool:
    """Base samples judged for the start: latents, pointwise energy (as trained), φ, and the
    log-weights that make them the target's (``-pointwise + φ·λ``)."""

    z: torch.Tensor
    pointwise: torch.Tensor
    phi: torch.Tensor
    log_w: torch.Tensor


def warm_start(target: StageTarget, config: TrainConfig, generator: torch.Generator,
               group: Group | None = None,
               on_pool: Callable[[JudgedPool], object] | None = None) -> dict[str, Any]:
    """Move the flow towards the target's modes by weighted maximum likelihood; return a record.

    Reverse KL learns only from where the flow already puts mass, so a target that is rare
    under the base (blue triangles are 0.8 % of the shapes generator's samples) gives it
    almost no gradient towards that mode. Base samples weighted by ``exp(-E)`` (pointwise
    energies and the fitted constraints) describe the target wherever the base covers it; a
    short phase of weighted MLE on them (forward KL, mass-covering) starts the flow there, and
    reverse KL then refines it. Nothing here changes the objective the stage converges to.
    ``on_pool`` receives the judged pool (the score-climbing chains start from it).
    """
    flow = target.flow
    if flow is None:
        raise TrainingError("warm_start needs the stage's flow", hint="give the StageTarget a flow")
    # Minibatches get their own stream, drawn first: judging the pool may consume the other
    # one differently on each rank (each draws augmentations for its own rows).
    draws = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
    phi, pointwise, _, z = features_in_batches(
        target, config.warm_start_samples, config.batch * 4, generator, group or Group(),
        use_flow=False)
    log_w = -config.temper * pointwise  # the target training aims at
    if phi.shape[1]:
        log_w = log_w + phi @ target.lam()
    if on_pool is not None:
        on_pool(JudgedPool(z, config.temper * pointwise, phi, log_w))
    weights = torch.softmax(log_w.double(), 0).float()
    ess = effective_sample_size(log_w)
    record: dict[str, Any] = {"samples": len(z), "ess": round(ess, 1), "steps": 0}
    if ess < 2:
        return record  # one point says nothing about the target's spread
    # A pool with many effective samples is fitted until a held-out fifth of it stops
    # improving; a small one (a rare target) gets the fixed, short fit, because its held-out
    # part is too small to tell a better fit from noise.
    held_out = None
    fit_rows = torch.arange(len(z))
    if ess >= VALIDATED_START_ESS:
        order = torch.randperm(len(z), generator=draws)
        held_out, fit_rows = order[: len(z) // 5], order[len(z) // 5:]
        held_weights = weights[held_out] / weights[held_out].sum()
    fit_weights = weights[fit_rows] / weights[fit_rows].sum()

    def held_out_nll() -> float:
        with torch.no_grad():
            rows = cast(torch.Tensor, held_out)
            return float(-(held_weights.to(config.device)
                           * flow.log_prob(z[rows].to(config.device))).sum())

    def batch_loss() -> torch.Tensor:
        rows = fit_rows[torch.multinomial(fit_weights, config.batch, replacement=True,
                                          generator=draws)]
        return -flow.log_prob(z[rows].to(config.device)).mean()

    nll, best = _fit_until_held_out_stops(
        flow, config, batch_loss, held_out_nll if held_out is not None else None,
        START_MAX_STEPS if held_out is not None else config.warm_start_steps)
    if held_out is not None:
        record["held_out_nll"] = round(best, 3)
    record.update(steps=len(nll), nll_first=nll[0] if nll else None,
                  nll_last=nll[-1] if nll else None)
    return record


def fit_record(fit: MomentFit, step: int, target: StageTarget) -> FitRecord:
    """Return the manifest's record of a fit: λ, achieved and target moments per constraint."""
    constraints = target.constraints()
    return FitRecord(
        step=step,
        ess=round(fit.ess, 1),
        samples=fit.samples,
        max_moment_error=round(fit.max_error, 5),
        flow_max_moment_error=(round(float((fit.flow_moments - fit.target).abs().max()), 5)
                               if fit.flow_moments is not None else None),
        constraints={
            c.text: {"lambda": [round(v, 4) for v in lam.tolist()],
                     "achieved": [round(v, 4) for v in ach.tolist()],
                     "target": [round(v, 4) for v in c.target.tolist()]}
            for c, lam, ach in zip(constraints, constraints.split(fit.lam),
                                   constraints.split(fit.achieved))
        },
    )


def warn_low_ess(fit: MomentFit, log_index: int, warnings_out: list[str], where: str,
                 *, refitted: bool = True) -> None:
    """Warn (and keep the warning for the manifest) when a fit rests on few samples."""
    if fit.ess_fraction < LOW_ESS_FRACTION:
        then = ("it is refitted on the flow's own samples during training" if refitted else
                "a slider stage's λ grid is not refitted: raise --moment-samples")
        message = (f"stage {log_index}: the moment fit on {where} rests on an effective sample "
                   f"size of {fit.ess:.0f} of {fit.samples}; λ may be unreliable ({then})")
        warnings_out.append(message)
        warnings.warn(message, stacklevel=3)
