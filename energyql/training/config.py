"""Settings of a training run, the learning-rate schedule and the per-step random streams."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (every stage uses the same ones).

    The estimator (see :mod:`energyql.training.objective`): ``score_share`` of the flat terms'
    gradient comes from the score-function estimator, the rest from their slope;
    ``forward_weight`` adds the self-normalised forward KL with a ``defensive`` share of base
    samples; ``chain_weight`` adds Markovian score climbing on persistent chains;
    ``replay_weight`` adds maximum likelihood on every judged image resampled by its exact
    weight. All of them keep the stage's exact target. ``temper`` multiplies the pointwise
    energies of the target the flow trains towards (1: the exact target; anything else moves
    it, is recorded in the manifest and named in the report).
    """

    steps: int = 400
    batch: int = 64
    lr: float = 1e-3
    final_lr_fraction: float = 0.05  # cosine decay to this share of lr
    weight_decay: float = 1e-4
    grad_clip: float = 10.0
    seed: int = 0
    device: str = "cpu"
    amp: bool = False  # bf16 autocast of the control models, GPU only
    blocks: int | None = None  # flow depth; None: sized to the latent (flows.flow_config_for)
    width: int | None = None   # coupling subnet width (conv: channels); None: sized likewise
    # A flat latent's couplings: "affine" (FrEIA's Glow blocks, PromptGen's flow) or "spline"
    # (rational-quadratic, energyql.splines; the worlds' default); image-shaped latents keep
    # the conv flow.
    coupling: str = "affine"
    # Fourier features of each context entry in the flow of a stage with a weight slider
    # (FlowConfig.frequencies): its target can move fast over a small part of the range.
    slider_frequencies: int = 6
    clip_copies: int = 8
    moment_samples: int = 4096
    refit_every: int = 50
    refit_samples: int = 1024
    # Mass-covering start (see warm_start): base samples judged, and flow-only MLE steps
    # (few: longer fits memorise the pool; 20 beat 50 and 200 on shapes).
    warm_start_samples: int = 0
    warm_start_steps: int = 20
    score_share: float = 1.0     # share of the score-function estimator for flat terms
    smooth_score_share: float = 0.0  # the same for smooth terms (CLIP) over flat generators
    forward_weight: float = 0.0  # weight of the self-normalised forward-KL term
    defensive: float = 0.1       # share of the batch drawn from the base for that term
    chain_weight: float = 1.0    # weight of the score-climbing term (persistent chains)
    # Replay (energyql.training.replay): weight of maximum likelihood on rows resampled from
    # every image the stage judged (the start's pool and every step's batch) by their exact
    # importance weights; rows per step (0: the batch) and the buffer's size.
    replay_weight: float = 0.0
    replay_rows: int = 0
    replay_capacity: int = 65_536
    temper: float = 1.0          # factor on pointwise energies; 1 = the exact target
    feedback_gain: float = 1.0  # how much of log(target / flow moments) each refit adds to λ
    closeness_samples: int = 1024  # flow samples that measure ESS/N and KL̂ after each stage
    checkpoint_every: int = 50
    max_bad_steps: int = 10
    threads: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def tempered(self) -> bool:
        """Whether the flow trains towards a tempered target instead of the exact one."""
        return self.temper != 1.0


def learning_rate(config: TrainConfig, step: int) -> float:
    """Cosine decay from ``lr`` to ``lr · final_lr_fraction`` over the run (a pure function of
    the step, so a resumed run follows the same schedule)."""
    progress = step / max(1, config.steps - 1)
    floor = config.final_lr_fraction
    return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_generator(seed: int, stage: int, step: int) -> torch.Generator:
    """Return the random stream of (seed, stage, step): distinct and reproducible, so that a
    resumed run retraces the uninterrupted one."""
    return torch.Generator().manual_seed((seed * 1_000_003 + stage * 10_007 + step) % (2**63))
