"""Run by tests/test_distributed.py under torchrun (and alone): train a toy stage, evaluate.

Usage: python tests/ddp_worker.py OUT_DIR
"""

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from energyql.distributed import current, shutdown  # noqa: E402
from energyql.energies.constraint import ConstraintEnergy  # noqa: E402
from energyql.energies.lower import StageEnergy  # noqa: E402
from energyql.evaluation import evaluate  # noqa: E402
from energyql.training import TrainConfig, train_stage  # noqa: E402
from tests.toys import PointGenerator, QuadraticEnergy, SideAttribute, TinyImageGenerator  # noqa: E402


def main(out: Path) -> None:
    torch.set_num_threads(1)
    group = current()
    energy = StageEnergy([QuadraticEnergy([1.0, -0.5], [1.0, 2.0])],
                         [ConstraintEnergy("dist", ("side",), (0.3, 0.7), "dist(side)")],
                         SideAttribute())
    config = TrainConfig(steps=8, batch=32, lr=3e-3, blocks=2, width=16, moment_samples=512,
                         refit_every=4, refit_samples=256, warm_start_samples=256,
                         warm_start_steps=3, forward_weight=1.0)
    sampler, _ = train_stage(PointGenerator(), energy, config, progress=False)
    figures = evaluate(TinyImageGenerator(), program="uniform(shape x color)", samples=300)
    if group.is_main:
        out.mkdir(parents=True, exist_ok=True)
        torch.save({k: v.clone() for k, v in sampler.flow.state_dict().items()}, out / "flow.pt")
        (out / "eval.json").write_text(json.dumps(figures, sort_keys=True))
        (out / "world.txt").write_text(str(group.world))
    group.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    shutdown()
