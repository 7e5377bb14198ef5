"""Errors raised by jaxcomp.

Every error is a subclass of :class:`JaxcompError` and of the built-in exception that describes it
best (a bad hyperparameter is also a ``ValueError``), so callers may catch either. One class per
thing that went wrong, each documented with when it is raised.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CompositionError",
    "CorruptArtifactError",
    "DatasetNotFoundError",
    "JaxcompError",
    "NotCalibratedError",
    "RankOutOfRangeError",
    "RecipeError",
    "SelectionError",
    "StructureMismatchError",
    "UnsupportedPrimitiveError",
    "WidthMismatchError",
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


class RankOutOfRangeError(JaxcompError, ValueError):
    """A low-rank method was given a rank that a layer cannot take.

    Raised at ``init`` when a rank is below 1 or above the layer's largest rank (``min(m, n)`` for
    an SVD); the message names the layer and the allowed range. Also exported as
    ``jaxcomp.lowrank.RankOutOfRangeError``.
    """


class CompositionError(JaxcompError, ValueError):
    """Transforms composed in an order whose baked result could not keep every effect.

    Raised by :func:`jaxcomp.chain` at ``init`` (and by its ``finalize``) when the finalized
    model would differ from the trained one, for example a pruner applied over low-rank factors
    that it cannot zero, or two transforms that both encode the same leaf. The message names the
    order that works where there is one. A chain is never silently baked with an effect missing.
    """


class UnsupportedPrimitiveError(JaxcompError, ValueError):
    """Structured pruning met a primitive it cannot follow channels through.

    The message names the primitive and the layer (the name stack of the equation).
    """


class WidthMismatchError(JaxcompError, ValueError):
    """The kept channels of a structurally pruned model do not fit its model.

    Raised when the members of one dependency group disagree on which channels they keep, when a
    channel that cannot be removed (tied to the input, the output or a constant) is removed, or
    when an artifact's widths do not match the model it names.
    """


class RecipeError(JaxcompError, ValueError):
    """A recipe (:mod:`jaxcomp.recipes`) is malformed or cannot run on its model.

    Raised before any training or writing: an unknown section, stage, key or value, a teacher
    checkpoint that does not fit its model, stages in an order that cannot compose, a budget
    that the recipe cannot meet. The message is one line naming the stage (its number and type)
    and the key, and what is allowed. ``stage`` and ``key`` hold them (``None`` where the
    problem is not one stage's or key's).
    """

    def __init__(self, message: str, *, stage: str | None = None, key: str | None = None):
        super().__init__(message)
        self.stage = stage
        self.key = key
