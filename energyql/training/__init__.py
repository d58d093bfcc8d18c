"""Training: one latent flow per stage, towards the stage's exact target.

The package's parts, each with one responsibility:

- :mod:`~energyql.training.config`: ``TrainConfig``, the learning-rate schedule, random streams;
- :mod:`~energyql.training.objective`: ``StageObjective``, the per-step loss (the estimator);
- :mod:`~energyql.training.fit`: λ fits of the constraints and the mass-covering start;
- :mod:`~energyql.training.resume`: what a stage's checkpoint holds and restoring it;
- :mod:`~energyql.training.loop`: ``train_stage``, the loop over steps;
- :mod:`~energyql.training.program`: ``train_program``, every stage of a program into an
  Artifact (``energyql.train`` adds the world's defaults and the report on top).
"""

from energyql.training.config import TrainConfig, learning_rate, step_generator
from energyql.training.fit import fit_constraints, warm_start
from energyql.training.loop import StageLog, StepInfo, train_stage
from energyql.training.objective import StageObjective, StepParts
from energyql.training.program import controls_record, train_program

__all__ = ["StageLog", "StageObjective", "StepInfo", "StepParts", "TrainConfig",
           "controls_record", "fit_constraints", "learning_rate", "step_generator",
           "train_program", "train_stage", "warm_start"]
