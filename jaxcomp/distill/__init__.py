"""Knowledge distillation: losses, feature capture, teacher-student training, Net2Net.

Losses are pure functions in the manner of optax's (:func:`kd_loss`, :func:`mimic_loss`,
:func:`hint_loss`, :func:`attention_loss`, :func:`neuron_loss`); :func:`jaxcomp.adapt.capture`
taps named layers of an unchanged Flax model; :func:`objective` turns weighted :class:`Term` s into
an objective for :func:`jaxcomp.train.make_train_step`; :func:`pseudo_data` (MUNGE) and
:func:`bayesian_dark_knowledge` (SGLD) are the data-side methods; :func:`wider` and
:func:`deeper` are Net2Net's function-preserving growth. See ``docs/distillation.md``.
"""

from jaxcomp.distill._attention import attention_loss
from jaxcomp.distill._attention import attention_map
from jaxcomp.distill._bdk import BayesianDarkKnowledge
from jaxcomp.distill._bdk import BayesianDarkKnowledgeState
from jaxcomp.distill._bdk import bayesian_dark_knowledge
from jaxcomp.distill._bdk import sgld_step
from jaxcomp.distill._hints import REGRESSORS
from jaxcomp.distill._hints import add_regressors
from jaxcomp.distill._hints import hint_loss
from jaxcomp.distill._hints import regressor
from jaxcomp.distill._hints import regressor_apply
from jaxcomp.distill._hints import strip_regressors
from jaxcomp.distill._kd import kd_loss
from jaxcomp.distill._kd import mimic_loss
from jaxcomp.distill._kd import soft_targets
from jaxcomp.distill._net2net import deeper
from jaxcomp.distill._net2net import wider
from jaxcomp.distill._neurons import CRITERIA
from jaxcomp.distill._neurons import neuron_loss
from jaxcomp.distill._neurons import select_neurons
from jaxcomp.distill._objective import objective
from jaxcomp.distill._objective import teacher_logits
from jaxcomp.distill._pseudo import munge
from jaxcomp.distill._pseudo import nearest_neighbors
from jaxcomp.distill._pseudo import pseudo_data
from jaxcomp.distill._students import MLP
from jaxcomp.distill._students import ConvNet
from jaxcomp.distill._terms import Outputs
from jaxcomp.distill._terms import Term
from jaxcomp.distill._terms import attention_term
from jaxcomp.distill._terms import hint_term
from jaxcomp.distill._terms import kd_term
from jaxcomp.distill._terms import label_term
from jaxcomp.distill._terms import mimic_term
from jaxcomp.distill._terms import neuron_term

__all__ = [
    "CRITERIA",
    "MLP",
    "REGRESSORS",
    "BayesianDarkKnowledge",
    "BayesianDarkKnowledgeState",
    "ConvNet",
    "Outputs",
    "Term",
    "add_regressors",
    "attention_loss",
    "attention_map",
    "attention_term",
    "bayesian_dark_knowledge",
    "deeper",
    "hint_loss",
    "hint_term",
    "kd_loss",
    "kd_term",
    "label_term",
    "mimic_loss",
    "mimic_term",
    "munge",
    "nearest_neighbors",
    "neuron_loss",
    "neuron_term",
    "objective",
    "pseudo_data",
    "regressor",
    "regressor_apply",
    "select_neurons",
    "sgld_step",
    "soft_targets",
    "strip_regressors",
    "teacher_logits",
    "wider",
]
