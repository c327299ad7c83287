"""Distillation methods, one file each, registered by name."""

from datadistill.methods import coreset, dc, dm, mtt  # noqa: F401  (registration)
from datadistill.methods.base import METHODS, HParams, Method, create_method, register_method

__all__ = ["METHODS", "HParams", "Method", "create_method", "register_method"]
