"""Loss terms for teacher-student training: each distillation loss, with the layers it reads.

A :class:`Term` is what :func:`jaxcomp.distill.objective` sums: a weight, the student and teacher
layers whose features it needs (captured with :func:`jaxcomp.adapt.capture`), and a function of
both networks' outputs. The builders here wrap the losses of this package; a custom term is a
:class:`Term` built by hand.

References:
    Hinton, Vinyals and Dean, arXiv:1503.02531 (:func:`kd_term`); Ba and Caruana,
    arXiv:1312.6184 (:func:`mimic_term`); Romero et al., arXiv:1412.6550 (:func:`hint_term`);
    Zagoruyko and Komodakis, arXiv:1612.03928 (:func:`attention_term`); Luo et al., AAAI 2016
    (:func:`neuron_term`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from collections.abc import Mapping
from collections.abc import Sequence
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcomp.distill._attention import attention_loss
from jaxcomp.distill._hints import REGRESSORS
from jaxcomp.distill._hints import hint_loss
from jaxcomp.distill._kd import check_temperature
from jaxcomp.distill._kd import kd_loss
from jaxcomp.distill._kd import mimic_loss
from jaxcomp.distill._neurons import neuron_loss

__all__ = [
    "Outputs",
    "Term",
    "attention_term",
    "hint_term",
    "kd_term",
    "label_term",
    "mimic_term",
    "neuron_term",
]


class Outputs(NamedTuple):
    """One network's forward pass: its logits and the captured features ``{layer: array}``."""

    logits: jax.Array
    features: dict[str, jax.Array]


class Term(NamedTuple):
    """One weighted loss of teacher-student training.

    Attributes:
      name: the name its value is reported under in the step's metrics.
      fn: ``fn(student, teacher, labels, params) -> scalar``: ``student`` and ``teacher`` are
        :class:`Outputs`, ``labels`` the batch's integer labels, ``params`` the student's full
        params tree (where trainable regressors live).
      weight: the term's factor in the sum.
      student_layers: the student layers ``fn`` reads from ``student.features``.
      teacher_layers: the teacher layers ``fn`` reads from ``teacher.features``.
    """

    name: str
    fn: Callable[[Outputs, Outputs, jax.Array, Any], jax.Array]
    weight: float = 1.0
    student_layers: tuple[str, ...] = ()
    teacher_layers: tuple[str, ...] = ()


def _check_weight(weight: float, fn: str) -> float:
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
        raise ValueError(f"{fn}: weight must be a finite number, got {weight!r}")
    return float(weight)


def _check_layer(name: Any, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty '/'-joined layer path, got {name!r}")
    return name


def label_term(*, weight: float = 1.0) -> Term:
    """The ordinary cross-entropy of the student's logits with the hard labels.

    Args:
      weight: the term's factor.

    Returns:
      A :class:`Term` named ``"labels"``.
    """
    weight = _check_weight(weight, "label_term")

    def fn(student, teacher, labels, params):
        del teacher, params
        return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(student.logits, labels))

    return Term("labels", fn, weight)


def kd_term(*, temperature: float = 4.0, alpha: float = 1.0, weight: float = 1.0) -> Term:
    """Hinton's distillation loss (:func:`jaxcomp.distill.kd_loss`) on the logits.

    Args:
      temperature: ``T > 0``.
      alpha: the soft part's weight in ``[0, 1]``; the hard labels get ``1 - alpha``.
      weight: the term's factor.

    Returns:
      A :class:`Term` named ``"kd"``.

    Raises:
      ValueError: ``temperature <= 0``, ``alpha`` outside ``[0, 1]``, or a bad weight.
    """
    check_temperature(temperature, "kd_term: temperature")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise ValueError(f"kd_term: alpha must be a number in [0, 1], got {alpha!r}")
    weight = _check_weight(weight, "kd_term")

    def fn(student, teacher, labels, params):
        del params
        return kd_loss(
            student.logits, teacher.logits, temperature=temperature, labels=labels, alpha=alpha
        )

    return Term("kd", fn, weight)


def mimic_term(*, weight: float = 1.0) -> Term:
    """Ba and Caruana's L2 regression of the teacher's logits (:func:`jaxcomp.distill.mimic_loss`).

    Returns:
      A :class:`Term` named ``"mimic"``.
    """
    weight = _check_weight(weight, "mimic_term")

    def fn(student, teacher, labels, params):
        del labels, params
        return mimic_loss(student.logits, teacher.logits)

    return Term("mimic", fn, weight)


def hint_term(
    student_layer: str, teacher_layer: str, *, regressor: str | None = None, weight: float = 1.0
) -> Term:
    """FitNets' hint loss between a student layer, through a regressor, and a teacher layer.

    Args:
      student_layer: the guided layer's path in the student.
      teacher_layer: the hint layer's path in the teacher.
      regressor: the regressor's name in the student's params, put there by
        :func:`jaxcomp.distill.add_regressors` (trained with the student); ``None`` when the two
        layers already have the same shape.
      weight: the term's factor.

    Returns:
      A :class:`Term` named ``"hint"``.

    Raises:
      ValueError: a layer name that is not a non-empty string. (A regressor missing from the
        params is a ``ValueError`` when the objective first runs.)
    """
    s = _check_layer(student_layer, "hint_term: student_layer")
    t = _check_layer(teacher_layer, "hint_term: teacher_layer")
    weight = _check_weight(weight, "hint_term")
    if regressor is not None and not isinstance(regressor, str):
        raise ValueError(f"hint_term: regressor must be a name (str) or None, got {regressor!r}")

    def fn(student, teacher, labels, params):
        del labels
        reg = None
        if regressor is not None:
            regs = params.get(REGRESSORS, {}) if isinstance(params, Mapping) else {}
            if regressor not in regs:
                raise ValueError(
                    f"hint_term: no regressor {regressor!r} in the student's params; add it with "
                    f"jaxcomp.distill.add_regressors (found {sorted(regs)})"
                )
            reg = regs[regressor]
        return hint_loss(student.features[s], teacher.features[t], reg)

    return Term("hint", fn, weight, (s,), (t,))


def attention_term(
    pairs: Mapping[str, str] | Sequence[tuple[str, str]], *, p: float = 2.0, weight: float = 1.0
) -> Term:
    """Attention transfer (:func:`jaxcomp.distill.attention_loss`), summed over layer pairs.

    Args:
      pairs: ``{student_layer: teacher_layer}`` or ``[(student_layer, teacher_layer), ...]``,
        each pair of equal spatial size.
      p: the attention map's exponent, ``> 0``.
      weight: the term's factor (the paper's ``beta / 2``; it used ``beta = 1000`` with its
        mean-over-positions loss).

    Returns:
      A :class:`Term` named ``"attention"``.

    Raises:
      ValueError: no pairs, a bad layer name, ``p <= 0``.
    """
    items = list(pairs.items()) if isinstance(pairs, Mapping) else list(pairs)
    if not items:
        raise ValueError("attention_term: pairs must name at least one (student, teacher) pair")
    checked = []
    for item in items:
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise ValueError(f"attention_term: each pair must be (student, teacher), got {item!r}")
        checked.append(
            (
                _check_layer(item[0], "attention_term: a student layer"),
                _check_layer(item[1], "attention_term: a teacher layer"),
            )
        )
    if not float(p) > 0:
        raise ValueError(f"attention_term: p must be > 0, got {p!r}")
    weight = _check_weight(weight, "attention_term")

    def fn(student, teacher, labels, params):
        del labels, params
        return sum(
            attention_loss(student.features[s], teacher.features[t], p=p) for s, t in checked
        )

    return Term("attention", fn, weight, tuple(s for s, _ in checked), tuple(t for _, t in checked))


def neuron_term(
    student_layer: str, teacher_layer: str, indices: Any, *, weight: float = 1.0
) -> Term:
    """Neuron-selective distillation (:func:`jaxcomp.distill.neuron_loss`).

    Args:
      student_layer: the student layer that regresses the selected neurons (as wide as
        ``indices``).
      teacher_layer: the teacher layer the neurons are taken from.
      indices: the selected neurons (:func:`jaxcomp.distill.select_neurons`).
      weight: the term's factor.

    Returns:
      A :class:`Term` named ``"neurons"``.

    Raises:
      ValueError: a bad layer name or ``indices`` that are not a non-empty vector.
    """
    s = _check_layer(student_layer, "neuron_term: student_layer")
    t = _check_layer(teacher_layer, "neuron_term: teacher_layer")
    idx = jnp.asarray(indices)
    if idx.ndim != 1 or idx.shape[0] < 1 or not jnp.issubdtype(idx.dtype, jnp.integer):
        raise ValueError(
            f"neuron_term: indices must be a non-empty integer vector, got {idx.dtype}{idx.shape}"
        )
    weight = _check_weight(weight, "neuron_term")

    def fn(student, teacher, labels, params):
        del labels, params
        return neuron_loss(student.features[s], teacher.features[t], idx)

    return Term("neurons", fn, weight, (s,), (t,))
