"""Unstructured pruning and weight sharing.

Masks with exact counts (layer-wise, global, N:M), criteria (magnitude, random, Taylor, OBD, OBS),
gradual and iterative schedules, ERK and sensitivity-based per-layer sparsities, L1/L2/biased decay
penalties, HashedNets and soft weight-sharing. See ``docs/pruning.md``.
"""

from jaxcomp.prune._capture import layer_hessians
from jaxcomp.prune._criteria import MagnitudeState
from jaxcomp.prune._criteria import RandomState
from jaxcomp.prune._criteria import TaylorState
from jaxcomp.prune._criteria import magnitude
from jaxcomp.prune._criteria import random
from jaxcomp.prune._criteria import taylor
from jaxcomp.prune._criteria import taylor_saliency
from jaxcomp.prune._distribution import erk
from jaxcomp.prune._distribution import erk_sparsities
from jaxcomp.prune._distribution import uniform
from jaxcomp.prune._fixed import FixedMasksState
from jaxcomp.prune._fixed import NmState
from jaxcomp.prune._fixed import fixed_masks
from jaxcomp.prune._fixed import nm
from jaxcomp.prune._hashed import HashedState
from jaxcomp.prune._hashed import HashedWeight
from jaxcomp.prune._hashed import hash_indices
from jaxcomp.prune._hashed import hashed
from jaxcomp.prune._masks import apply_masks
from jaxcomp.prune._masks import global_masks
from jaxcomp.prune._masks import layerwise_masks
from jaxcomp.prune._masks import nm_mask
from jaxcomp.prune._masks import num_pruned
from jaxcomp.prune._masks import topk_mask
from jaxcomp.prune._obd import ObdState
from jaxcomp.prune._obd import exact_hessian_diag
from jaxcomp.prune._obd import gauss_newton_diag
from jaxcomp.prune._obd import hutchinson_diag
from jaxcomp.prune._obd import obd
from jaxcomp.prune._obd import obd_saliency
from jaxcomp.prune._obs import ObsResult
from jaxcomp.prune._obs import layer_hessian
from jaxcomp.prune._obs import obs_kernel
from jaxcomp.prune._obs import obs_prune
from jaxcomp.prune._pruner import PrunerState
from jaxcomp.prune._pruner import build_pruner
from jaxcomp.prune._pruner import mask_grad
from jaxcomp.prune._regularizers import biased_decay
from jaxcomp.prune._regularizers import l1
from jaxcomp.prune._regularizers import l2
from jaxcomp.prune._schedules import gradual_schedule
from jaxcomp.prune._schedules import iterative_schedule
from jaxcomp.prune._sensitivity import SensitivityResult
from jaxcomp.prune._sensitivity import sensitivity_scan
from jaxcomp.prune._sensitivity import sparsities_for_drop
from jaxcomp.prune._soft_sharing import MixturePrior
from jaxcomp.prune._soft_sharing import SoftSharingParams
from jaxcomp.prune._soft_sharing import SoftSharingState
from jaxcomp.prune._soft_sharing import soft_sharing
from jaxcomp.prune._soft_sharing import soft_sharing_penalty

__all__ = [
    "FixedMasksState",
    "HashedState",
    "HashedWeight",
    "MagnitudeState",
    "MixturePrior",
    "NmState",
    "ObdState",
    "ObsResult",
    "PrunerState",
    "RandomState",
    "SensitivityResult",
    "SoftSharingParams",
    "SoftSharingState",
    "TaylorState",
    "apply_masks",
    "biased_decay",
    "build_pruner",
    "erk",
    "erk_sparsities",
    "exact_hessian_diag",
    "fixed_masks",
    "gauss_newton_diag",
    "global_masks",
    "gradual_schedule",
    "hash_indices",
    "hashed",
    "hutchinson_diag",
    "iterative_schedule",
    "l1",
    "l2",
    "layer_hessian",
    "layer_hessians",
    "layerwise_masks",
    "magnitude",
    "mask_grad",
    "nm",
    "nm_mask",
    "num_pruned",
    "obd",
    "obd_saliency",
    "obs_kernel",
    "obs_prune",
    "random",
    "sensitivity_scan",
    "soft_sharing",
    "soft_sharing_penalty",
    "sparsities_for_drop",
    "taylor",
    "taylor_saliency",
    "topk_mask",
    "uniform",
]
