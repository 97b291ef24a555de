"""The one exception type for bad input data."""

from __future__ import annotations


class DataError(ValueError):
    """Input images or a domain spec cannot be used; the message names the path and the fix."""
