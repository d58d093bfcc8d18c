"""The command-line interface: one thin typer command per file.

Every command module registers itself on :data:`energyql.cli.app.app` when imported; command
modules import torch only inside their bodies, so ``energyql check`` stays instant.
"""

import importlib
import pkgutil

from energyql.cli.app import app, main

for _info in pkgutil.iter_modules(__path__):
    if _info.name != "app":
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["app", "main"]
