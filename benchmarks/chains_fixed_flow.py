"""Are the trainer's chains exact when the flow holds still? (blue triangles, on truth)

Trains ``color == blue & shape == triangle`` on shapes for ``--steps`` steps at the defaults,
then freezes the flow and runs the score-climbing term's kernel by hand: 512 chains seeded by
sampling-importance-resampling base samples, each step ``--batch`` flow proposals moving as
many randomly picked chains by independent Metropolis–Hastings (``w = p0·exp(-E)/q``, the
proposal's density from the forward pass, the chain's from the inverse, as in training).
It prints the exact target's large share among blue triangles (base samples weighted by
``exp(-E)``), the flow's, the flow's after SIR, and the chains' every 25 steps. If the
chains stay at the target's share here but not in training, the bias is made by training
the flow on the chains (docs/training.md, "More chains, lagged chains, chains under a
fixed flow").

    python benchmarks/chains_fixed_flow.py [--steps 150] [--moves 300] [--batch 64]
"""

from __future__ import annotations

import argparse

import torch

PROGRAM = "color == blue & shape == triangle"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps first")
    parser.add_argument("--moves", type=int, default=300, help="kernel steps after")
    parser.add_argument("--batch", type=int, default=64, help="proposals per kernel step")
    parser.add_argument("--chains", type=int, default=512)
    parser.add_argument("--base", type=int, default=40_000, help="base samples (reference)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import energyql as eq
    import energyql.generators
    from energyql.energies import ControlModels, lower_stage
    from energyql.flows import standard_normal_log_prob
    from energyql.target import StageTarget

    artifact = eq.train(PROGRAM, gen="shapes", steps=args.steps, progress=False,
                        threads=args.threads)
    generator = energyql.generators.load("shapes")
    energy = lower_stage(eq.compile(PROGRAM, gen="shapes").stages[0],
                         ControlModels("shapes")).eval()
    flow = artifact.sampler.flow
    target = StageTarget(generator, energy, flow)
    rng = torch.Generator().manual_seed(0)
    dim = generator.latent_dim

    def energy_of(u: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([target.energy_of(rows, None) for rows in u.split(512)])

    def large_share(u: torch.Tensor, weights: torch.Tensor | None = None) -> float:
        truth = generator.truth(u)
        hit = ((truth["shape"] == 2) & (truth["color"] == 2)).double()
        weights = torch.ones(len(u), dtype=torch.float64) if weights is None else weights
        return float((weights * hit * truth["size"].double()).sum() / (weights * hit).sum())

    def proposals(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        eps = torch.randn(n, dim, generator=rng)
        with torch.no_grad():
            u, logdet = flow(eps)
        return u, standard_normal_log_prob(eps) - logdet

    base = torch.randn(args.base, dim, generator=rng)
    base_energy = energy_of(base)
    weights = torch.softmax(-base_energy.double(), 0)
    print(f"exact target (base SIR): large {large_share(base, weights):.3f}, "
          f"ESS {float(1 / (weights * weights).sum()):.1f}", flush=True)
    u, log_q = proposals(4000)
    log_w = generator.log_prior(u) - energy_of(u) - log_q
    print(f"flow: large {large_share(u):.3f}; flow + SIR: large "
          f"{large_share(u, torch.softmax(log_w.double(), 0)):.3f}", flush=True)

    picked = torch.multinomial(weights, args.chains, replacement=True, generator=rng)
    chains, chain_energy = base[picked].clone(), base_energy[picked].clone()
    for move in range(1, args.moves + 1):
        z, log_q_z = proposals(args.batch)
        z_energy = energy_of(z)
        rows = torch.randperm(args.chains, generator=rng)[:args.batch]
        with torch.no_grad():
            log_q_chain = flow.log_prob(chains[rows])
        new = generator.log_prior(z) - z_energy - log_q_z
        old = generator.log_prior(chains[rows]) - chain_energy[rows] - log_q_chain
        accept = torch.rand(args.batch, generator=rng).log() < new - old
        chains[rows] = torch.where(accept[:, None], z, chains[rows])
        chain_energy[rows] = torch.where(accept, z_energy, chain_energy[rows])
        if move % 25 == 0:
            print(f"move {move}: chains large {large_share(chains):.3f}, accepted "
                  f"{float(accept.float().mean()):.2f}", flush=True)


if __name__ == "__main__":
    main()
