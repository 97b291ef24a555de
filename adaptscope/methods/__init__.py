"""Adaptation methods: one module each, registered by name on the shared loop."""

from adaptscope.methods import cdc, dcl, ewc, freezed, tgan  # noqa: F401  (registration)
from adaptscope.methods.base import (
    METHODS,
    Method,
    MethodContext,
    Step,
    get_method,
    hp,
    register_method,
)

__all__ = ["METHODS", "Method", "MethodContext", "Step", "get_method", "hp", "register_method"]
