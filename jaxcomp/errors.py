"""Errors raised by jaxcomp.

Every error is a subclass of :class:`JaxcompError` and of the built-in exception that describes it
best (a bad hyperparameter is also a ``ValueError``), so callers may catch either. One class per
thing that went wrong, each documented with when it is raised.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CorruptArtifactError",
    "DatasetNotFoundError",
    "JaxcompError",
    "NotCalibratedError",
    "SelectionError",
    "StructureMismatchError",
]


class JaxcompError(Exception):
    """Base class of every error that jaxcomp raises on purpose."""


class SelectionError(JaxcompError, ValueError):
    """A ``where=`` selection is malformed or selects nothing.

    Raised when a regex rule matches no leaf, when a leaf is covered by no rule of a rule list
    that has no default, or when a selection selects no leaf at all. The message names the paths.
    """


class StructureMismatchError(JaxcompError, ValueError):
    """Two pytrees that must share a structure do not (for example params and a mask).

    The message names the first differing paths, as ``jax.tree_util.keystr`` writes them.
    """


class DatasetNotFoundError(JaxcompError, FileNotFoundError):
    """A dataset was asked for that is neither embedded nor present on disk.

    jaxcomp never downloads at run time; the message says how to prepare the data.
    """


class CheckpointError(JaxcompError, RuntimeError):
    """A checkpoint cannot be restored into the requested training state."""


class CorruptArtifactError(JaxcompError, ValueError):
    """A compressed artifact is truncated, corrupted, or of an unknown format version."""


class NotCalibratedError(JaxcompError, RuntimeError):
    """A calibration observer was asked for a scale before it saw any data."""
