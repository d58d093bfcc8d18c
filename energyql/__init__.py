"""energyql: distributional control of pre-trained image generators as energy expressions.

    >>> import energyql as eq
    >>> prog = eq.compile('clip("a blue triangle") | then debias(size)', gen="shapes")
    >>> artifact = eq.train(prog, gen="shapes", out="runs/x", steps=200)  # doctest: +SKIP
    >>> images = artifact.sample(16)                                      # doctest: +SKIP
    >>> sampler = eq.Sampler.load("runs/x")   # an nn.Module for any torch program, doctest: +SKIP

Importing energyql does not import torch; the training and sampling entry points import it
on first use.
"""

from __future__ import annotations

from energyql.errors import (
    ArgumentError,
    ArtifactError,
    CompositionError,
    EnergyQLError,
    ExpressionError,
    NameResolutionError,
    ParseError,
    TrainingError,
    UnknownGeneratorError,
    UsageError,
    WeightsMissingError,
)
from energyql.lang.api import (
    Program,
    attr,
    clip,
    compile,
    debias,
    dist,
    keep,
    pose,
    slider,
    uniform,
)

__version__ = "0.1.0"  # the one place the version is set (pyproject reads it)

# Torch-backed entry points, imported lazily so that the language layer stays instant.
_LAZY = {
    "train": "energyql.api:train",
    "load": "energyql.sampler:load",
    "Sampler": "energyql.sampler:Sampler",
    "Artifact": "energyql.sampler:Artifact",
    "TrainConfig": "energyql.training:TrainConfig",
    "FlowConfig": "energyql.flows:FlowConfig",
    "Manifest": "energyql.manifest:Manifest",
    "ModuleGenerator": "energyql.generators.base:ModuleGenerator",
    "evaluate": "energyql.evaluation:evaluate",
    "load_generator": "energyql.generators:load",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, _, attribute = _LAZY[name].partition(":")
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'energyql' has no attribute '{name}'")


__all__ = [
    "ArgumentError", "ArtifactError", "CompositionError", "EnergyQLError", "ExpressionError",
    "NameResolutionError", "ParseError", "Program", "TrainingError", "UnknownGeneratorError",
    "UsageError", "WeightsMissingError", "attr", "clip", "compile", "debias", "dist", "keep",
    "pose", "slider", "uniform", *_LAZY, "__version__",
]
