"""Datasets: the embedded ToyFaces world, real image folders, and target-domain specs."""

from adaptscope.data.errors import DataError

__all__ = ["DataError"]
