"""Generators: the registry (torch-free) and, on demand, the torch modules."""

from energyql.generators.registry import GeneratorSpec, names, register, resolve

__all__ = ["GeneratorSpec", "names", "register", "resolve", "load"]


def load(name_or_module, **options):
    """Return a Generator for a registry name, a ``scheme:PATH`` string, or a Generator."""
    if not isinstance(name_or_module, str):
        return name_or_module
    return resolve(name_or_module).load(**options)
