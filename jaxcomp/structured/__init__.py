"""Structured pruning: filters, channels and neurons removed for real, across dependencies.

:func:`groups` traces a model's jaxpr and finds the channels that must go together;
:func:`masks` scores them; :func:`apply_masks` gives the masked model and :func:`shrink` the
physically smaller one, which the model's own code runs.
"""

from jaxcomp.structured._brain_damage import brain_damage
from jaxcomp.structured._brain_damage import brain_damage_penalty
from jaxcomp.structured._coarse import kernel_level
from jaxcomp.structured._criteria import CRITERIA
from jaxcomp.structured._criteria import keep_top
from jaxcomp.structured._criteria import masks
from jaxcomp.structured._criteria import scores
from jaxcomp.structured._graph import Group
from jaxcomp.structured._graph import Groups
from jaxcomp.structured._graph import Member
from jaxcomp.structured._graph import groups
from jaxcomp.structured._lasso import lasso_channels
from jaxcomp.structured._merge import merge_neurons
from jaxcomp.structured._nodes import ChannelPruned
from jaxcomp.structured._regularizers import neuron_group_penalty
from jaxcomp.structured._regularizers import ssl_penalty
from jaxcomp.structured._sensitivity import GroupSensitivity
from jaxcomp.structured._sensitivity import ratios_for_drop
from jaxcomp.structured._sensitivity import sensitivity
from jaxcomp.structured._shrink import Masks
from jaxcomp.structured._shrink import apply_masks
from jaxcomp.structured._shrink import run_small
from jaxcomp.structured._shrink import shrink
from jaxcomp.structured._shrink import widths
from jaxcomp.structured._transform import ChannelState
from jaxcomp.structured._transform import channels
from jaxcomp.structured._transform import ratio_for_flops
from jaxcomp.structured._transform import remove_channels
from jaxcomp.structured._transform import small

__all__ = [
    "CRITERIA",
    "ChannelPruned",
    "ChannelState",
    "Group",
    "GroupSensitivity",
    "Groups",
    "Masks",
    "Member",
    "apply_masks",
    "brain_damage",
    "brain_damage_penalty",
    "channels",
    "groups",
    "keep_top",
    "kernel_level",
    "lasso_channels",
    "masks",
    "merge_neurons",
    "neuron_group_penalty",
    "ratio_for_flops",
    "ratios_for_drop",
    "remove_channels",
    "run_small",
    "scores",
    "sensitivity",
    "shrink",
    "small",
    "ssl_penalty",
    "widths",
]
