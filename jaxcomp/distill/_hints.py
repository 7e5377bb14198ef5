"""FitNets hints: a student layer, through a trainable regressor, regresses a teacher layer.

A thin, deep student is guided by a *hint*: the output of one of the teacher's hidden layers. The
student's *guided* layer usually has another width (and, for convolutions, another spatial size),
so a small regressor maps it to the hint's shape, and the hint loss is the squared error between
the regressor's output and the hint. The regressor is trained with the student and thrown away.

Here a regressor is plain data, a params dict, with one function to run it:

* dense ``{"kernel": (d_s, d_t), "bias": (d_t,)}`` when the hint is a vector (the guided features
  are flattened);
* convolutional ``{"kernel": (k_h, k_w, c_s, c_t), "bias": (c_t,)}`` when both are NHWC feature
  maps, a VALID convolution with ``k = n_s - n_t + 1`` so that the output has the hint's spatial
  size (a 1x1 convolution when the sizes agree), as FitNets prescribe.

To train a regressor with the student, put its params in the student's params tree with
:func:`jaxcomp.distill.add_regressors` (Flax ignores params no layer reads) and remove them with
:func:`jaxcomp.distill.strip_regressors` afterwards.

References:
    Romero, Ballas, Kahou, Chassang, Gatta and Bengio, "FitNets: hints for thin deep nets",
    ICLR 2015, arXiv:1412.6550.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = [
    "REGRESSORS",
    "add_regressors",
    "hint_loss",
    "regressor",
    "regressor_apply",
    "strip_regressors",
]

REGRESSORS = "distill_regressors"
"""The top-level key under which :func:`add_regressors` keeps regressors in a params dict."""


def regressor(
    key: jax.Array, student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]
) -> dict[str, jax.Array]:
    """Initializes a regressor from a student layer's features to a teacher layer's.

    Args:
      key: a PRNG key.
      student_shape: the guided layer's feature shape, batch axis included (only the axes after
        it matter).
      teacher_shape: the hint layer's feature shape, batch axis included.

    Returns:
      ``{"kernel", "bias"}``: dense (LeCun-normal kernel ``(prod(student_shape[1:]), d_t)``) when
      the hint is ``(batch, d_t)``; a VALID convolution when both are ``(batch, h, w, c)``.

    Raises:
      ValueError: the hint is a feature map but the student's is not, or the student's map is
        spatially smaller than the hint's.
    """
    s, t = tuple(student_shape), tuple(teacher_shape)
    if len(s) < 2 or len(t) < 2:
        raise ValueError(
            f"regressor: shapes need a batch axis and features, got student {s}, teacher {t}"
        )
    if len(t) == 2:
        d_in = 1
        for n in s[1:]:
            d_in *= int(n)
        kernel = jax.nn.initializers.lecun_normal()(key, (d_in, t[1]))
        return {"kernel": kernel, "bias": jnp.zeros((t[1],))}
    if len(t) == 4 and len(s) == 4:
        kh, kw = s[1] - t[1] + 1, s[2] - t[2] + 1
        if kh < 1 or kw < 1:
            raise ValueError(
                f"regressor: the student's feature map {s[1:3]} is smaller than the teacher's "
                f"{t[1:3]}; FitNets' convolutional regressor needs n_student >= n_teacher"
            )
        kernel = jax.nn.initializers.lecun_normal()(key, (kh, kw, s[3], t[3]))
        return {"kernel": kernel, "bias": jnp.zeros((t[3],))}
    raise ValueError(
        f"regressor: cannot map student features {s} to teacher features {t}; the hint must be "
        "(batch, d) (dense regressor) or both must be (batch, h, w, c) (convolutional regressor)"
    )


def regressor_apply(params: dict[str, jax.Array], features: jax.Array) -> jax.Array:
    """Runs a regressor from :func:`regressor` on a batch of student features.

    Args:
      params: the regressor's ``{"kernel", "bias"}``.
      features: the guided layer's output, ``(batch, ...)``.

    Returns:
      The regressed features, of the hint's shape.
    """
    kernel, bias = params["kernel"], params["bias"]
    if kernel.ndim == 2:
        x = jnp.reshape(features, (features.shape[0], -1))
        return x @ kernel + bias[None, :]
    out = jax.lax.conv_general_dilated(
        features, kernel, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return out + bias[None, None, None, :]


def hint_loss(
    student_features: jax.Array,
    teacher_features: jax.Array,
    regressor_params: dict[str, jax.Array] | None = None,
) -> jax.Array:
    """FitNets' hint loss: ``0.5 * mean((r(student) - teacher)^2)``.

    The mean is over every element (batch and features), so the loss's size does not grow with
    the layer's. The teacher's features get no gradient.

    Args:
      student_features: the guided layer's output.
      teacher_features: the hint layer's output.
      regressor_params: a regressor from :func:`regressor`; ``None`` when the shapes already agree.

    Returns:
      A scalar.

    Raises:
      ValueError: the regressed student features and the hint differ in shape.
    """
    s = (
        student_features
        if regressor_params is None
        else regressor_apply(regressor_params, student_features)
    )
    if jnp.shape(s) != jnp.shape(teacher_features):
        raise ValueError(
            f"hint_loss: the (regressed) student features have shape {jnp.shape(s)} but the "
            f"teacher's hint has shape {jnp.shape(teacher_features)}"
        )
    return 0.5 * jnp.mean(jnp.square(s - jax.lax.stop_gradient(teacher_features)))


def add_regressors(params: dict[str, Any], regressors: dict[str, Any]) -> dict[str, Any]:
    """Returns ``params`` with ``regressors`` under the key :data:`REGRESSORS`, to train together.

    Args:
      params: the student's params dict (``variables["params"]``).
      regressors: ``{name: regressor params}``; the names are those hint terms refer to.

    Returns:
      A new dict; ``params`` is not changed.

    Raises:
      ValueError: ``params`` is not a dict or already has a layer named :data:`REGRESSORS`.
    """
    if not isinstance(params, dict):
        raise ValueError(f"add_regressors: params must be a dict, got {type(params).__name__}")
    if REGRESSORS in params:
        raise ValueError(f"add_regressors: params already hold a {REGRESSORS!r} entry")
    return {**params, REGRESSORS: dict(regressors)}


def strip_regressors(params: dict[str, Any]) -> dict[str, Any]:
    """Returns ``params`` without the regressors that :func:`add_regressors` put there."""
    return {k: v for k, v in params.items() if k != REGRESSORS}
