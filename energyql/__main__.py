"""``python -m energyql`` runs the CLI (also what ``torchrun -m energyql`` starts)."""

from energyql.cli import main

if __name__ == "__main__":
    main()
