"""Schedules of sparsity, bit width and temperature: functions of the step, usable under jit."""

from jaxcomp.schedules._schedules import as_schedule
from jaxcomp.schedules._schedules import constant
from jaxcomp.schedules._schedules import linear
from jaxcomp.schedules._schedules import one_shot
from jaxcomp.schedules._schedules import polynomial
from jaxcomp.schedules._schedules import step

__all__ = [
    "as_schedule",
    "constant",
    "linear",
    "one_shot",
    "polynomial",
    "step",
]
