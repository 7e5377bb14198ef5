"""Low-rank factorization: SVD, separable, CP, Tucker-2, rank selection, factorized layers.

Each method is a structure-changing transform (its ``cparams`` are the factors, its ``apply``
rebuilds the dense kernels for the unchanged model) whose ``finalize`` gives factored-kernel nodes
that :func:`jaxcomp.adapt.run_factorized` runs directly; and there are Flax layers that are
factorized from the start. See ``docs/lowrank.md``.
"""

from jaxcomp.errors import RankOutOfRangeError
from jaxcomp.lowrank._bn_lowrank import LowRankConv
from jaxcomp.lowrank._bn_lowrank import lowrank_conv_variables
from jaxcomp.lowrank._cp import CpState
from jaxcomp.lowrank._cp import cp
from jaxcomp.lowrank._decompose import cp_als
from jaxcomp.lowrank._decompose import cp_nls
from jaxcomp.lowrank._decompose import cp_reconstruct
from jaxcomp.lowrank._decompose import split_svd
from jaxcomp.lowrank._decompose import tucker2_decompose
from jaxcomp.lowrank._denton import BiclusterState
from jaxcomp.lowrank._denton import MonochromaticState
from jaxcomp.lowrank._denton import bicluster
from jaxcomp.lowrank._denton import monochromatic
from jaxcomp.lowrank._jaderberg import JaderbergState
from jaxcomp.lowrank._jaderberg import jaderberg
from jaxcomp.lowrank._jaderberg import spatial_convs
from jaxcomp.lowrank._nodes import CP
from jaxcomp.lowrank._nodes import Bicluster
from jaxcomp.lowrank._nodes import LowRank
from jaxcomp.lowrank._nodes import Monochromatic
from jaxcomp.lowrank._nodes import Predicted
from jaxcomp.lowrank._nodes import Separable
from jaxcomp.lowrank._nodes import SeparableBasis
from jaxcomp.lowrank._nodes import Tucker2
from jaxcomp.lowrank._predicted import PredictedDense
from jaxcomp.lowrank._predicted import PredictedState
from jaxcomp.lowrank._predicted import kernel_dictionary
from jaxcomp.lowrank._predicted import predicted
from jaxcomp.lowrank._rank import SensitivityScan
from jaxcomp.lowrank._rank import rank_for_compression
from jaxcomp.lowrank._rank import rank_for_energy
from jaxcomp.lowrank._rank import sensitivity_scan
from jaxcomp.lowrank._reconstruct import Calibration
from jaxcomp.lowrank._reconstruct import fit_separable
from jaxcomp.lowrank._separable import SeparableBasisState
from jaxcomp.lowrank._separable import separable_basis
from jaxcomp.lowrank._svd import SvdState
from jaxcomp.lowrank._svd import svd
from jaxcomp.lowrank._tucker import Tucker2State
from jaxcomp.lowrank._tucker import tucker2

__all__ = [
    "CP",
    "Bicluster",
    "BiclusterState",
    "Calibration",
    "CpState",
    "JaderbergState",
    "LowRank",
    "LowRankConv",
    "Monochromatic",
    "MonochromaticState",
    "Predicted",
    "PredictedDense",
    "PredictedState",
    "RankOutOfRangeError",
    "SensitivityScan",
    "Separable",
    "SeparableBasis",
    "SeparableBasisState",
    "SvdState",
    "Tucker2",
    "Tucker2State",
    "bicluster",
    "cp",
    "cp_als",
    "cp_nls",
    "cp_reconstruct",
    "fit_separable",
    "jaderberg",
    "kernel_dictionary",
    "lowrank_conv_variables",
    "monochromatic",
    "predicted",
    "rank_for_compression",
    "rank_for_energy",
    "sensitivity_scan",
    "separable_basis",
    "spatial_convs",
    "split_svd",
    "svd",
    "tucker2",
    "tucker2_decompose",
]
