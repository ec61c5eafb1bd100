"""The method registry: everything method-specific lives in an entry here, never in the training loop.

An entry says how to turn a freshly loaded classifier into the model to train (a peft config class and
its hyperparameters, or none for full fine-tuning), the learning rate it is usually trained with, and any
hook it needs after wrapping. Adding a method means adding an entry; tests pick it up automatically.
"""

from peftbench.methods import entries as _entries  # noqa: F401 - registers every method
from peftbench.methods.registry import REGISTRY, Method, groups, parse_methods, pooler_modules

GROUPS = groups()
__all__ = ["GROUPS", "REGISTRY", "Method", "groups", "parse_methods", "pooler_modules"]
