"""Bayesian dark knowledge: distill an SGLD posterior's predictive distribution online.

A Bayesian teacher's prediction is an average over posterior samples, too costly to keep at test
time. Korattikara et al. sample the teacher's parameters with stochastic gradient Langevin
dynamics and, at each step, train a single student network to match the current sample's
predictions; over many steps the student learns the posterior predictive average. Each step:

1. Langevin step on a minibatch of ``B`` examples of ``N``:
   ``theta <- theta - eta/2 * grad U(theta) + N(0, eta)``, with
   ``U(theta) = N/B * sum_batch -log p(y | x, theta) + lambda/2 * ||theta||^2``
   (the negative log posterior with a Gaussian prior of precision ``lambda``).
2. Perturb the inputs, ``x' = x + N(0, sigma^2)`` (the paper draws the student's inputs from a
   perturbed version of the data so it learns the predictive distribution around it).
3. One step of the student on ``x'`` with the teacher sample's soft predictions as targets (the
   cross-entropy ``-sum_y p(y | x', theta) log S(y | x', w)``; :func:`jaxcomp.distill.kd_loss`
   at ``T = 1``, whose gradient is the same), after ``burn_in`` Langevin steps.

The student is an ordinary :class:`jaxcomp.train.TrainState` (any optimizer, any compression
transform). The teacher is a model without mutable collections (no batch norm).

References:
    Korattikara, Rathod, Murphy and Welling, "Bayesian dark knowledge", NeurIPS 2015,
    arXiv:1506.04416.

    Welling and Teh, "Bayesian learning via stochastic gradient Langevin dynamics", ICML 2011.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxcomp.distill._objective import objective
from jaxcomp.distill._terms import kd_term
from jaxcomp.train import TrainState
from jaxcomp.train import make_train_step

__all__ = [
    "BayesianDarkKnowledge",
    "BayesianDarkKnowledgeState",
    "bayesian_dark_knowledge",
    "sgld_step",
]


def sgld_step(params: Any, grads: Any, *, key: jax.Array, learning_rate: float | jax.Array) -> Any:
    """One Langevin step: ``theta - eta/2 * grad + sqrt(eta) * N(0, 1)`` on every leaf.

    Args:
      params: the current sample ``theta`` (a pytree of float arrays).
      grads: ``grad U(theta)``, the same structure.
      key: the PRNG key of the injected noise.
      learning_rate: the step size ``eta > 0`` (the noise's variance).

    Returns:
      The next sample.
    """
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.tree.unflatten(treedef, list(jax.random.split(key, len(leaves))))
    return jax.tree.map(
        lambda p, g, k: (
            p
            - 0.5 * learning_rate * g
            + jnp.sqrt(learning_rate) * jax.random.normal(k, p.shape, p.dtype)
        ),
        params,
        grads,
        keys,
    )


class BayesianDarkKnowledgeState(NamedTuple):
    """The state of :func:`bayesian_dark_knowledge`.

    Attributes:
      step: Langevin steps taken (int32).
      teacher_params: the current posterior sample.
      student: the student's :class:`jaxcomp.train.TrainState`.
      key: the PRNG key of the Langevin noise and input perturbations.
    """

    step: jax.Array
    teacher_params: Any
    student: TrainState
    key: jax.Array


class BayesianDarkKnowledge(NamedTuple):
    """``init(teacher_params, student, *, key) -> state`` and jitted ``step(state, (x, y))``."""

    init: Callable[..., BayesianDarkKnowledgeState]
    step: Callable[..., tuple[BayesianDarkKnowledgeState, dict[str, jax.Array]]]


def bayesian_dark_knowledge(
    teacher_apply: Callable[..., Any],
    *,
    num_train: int,
    learning_rate: float | Callable[[jax.Array], jax.Array],
    prior_precision: float = 1.0,
    input_noise: float = 0.0,
    burn_in: int = 0,
    train_kwarg: str | None = "train",
) -> BayesianDarkKnowledge:
    """Builds the online teacher (SGLD) and student (distillation) step.

    Args:
      teacher_apply: the teacher's ``apply``; it runs as ``teacher_apply({"params": theta}, x)``.
      num_train: ``N``, the training set's size (scales the minibatch likelihood).
      learning_rate: the Langevin step size ``eta > 0``, or a schedule ``step -> eta``.
      prior_precision: ``lambda >= 0`` of the Gaussian prior.
      input_noise: the standard deviation ``sigma >= 0`` of the perturbation of the student's
        inputs.
      burn_in: Langevin steps before the student starts learning, ``>= 0``.
      train_kwarg: the models' train/inference keyword (``None`` for none); the teacher runs with
        ``False``, the student with ``True``.

    Returns:
      A :class:`BayesianDarkKnowledge`. ``step`` returns metrics ``teacher_nll`` (the sample's
      mean negative log-likelihood on the batch), ``student_loss`` and ``student_accuracy``
      (zero during burn-in).

    Raises:
      ValueError: a hyperparameter out of range.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import jaxcomp as jc
        >>> from jaxcomp import distill
        >>> teacher, student = distill.MLP(features=(8,)), distill.MLP(features=(4,))
        >>> x, y = jnp.ones((4, 6)), jnp.array([0, 1, 2, 3])
        >>> tp = teacher.init(jax.random.key(0), x)["params"]
        >>> sv = student.init(jax.random.key(1), x)
        >>> s = jc.train.TrainState.create(apply_fn=student.apply, variables=sv,
        ...                                tx=optax.sgd(1e-2), key=jax.random.key(2))
        >>> bdk = distill.bayesian_dark_knowledge(teacher.apply, num_train=4, learning_rate=1e-4)
        >>> state, metrics = bdk.step(bdk.init(tp, s, key=jax.random.key(3)), (x, y))
        >>> int(state.step)
        1
    """
    if isinstance(num_train, bool) or not isinstance(num_train, int) or num_train < 1:
        raise ValueError(
            f"bayesian_dark_knowledge: num_train must be an int >= 1, got {num_train!r}"
        )
    if not callable(learning_rate) and not learning_rate > 0:
        raise ValueError(
            "bayesian_dark_knowledge: learning_rate must be > 0 or a schedule, "
            f"got {learning_rate!r}"
        )
    if not prior_precision >= 0:
        raise ValueError(
            f"bayesian_dark_knowledge: prior_precision must be >= 0, got {prior_precision!r}"
        )
    if not input_noise >= 0:
        raise ValueError(f"bayesian_dark_knowledge: input_noise must be >= 0, got {input_noise!r}")
    if isinstance(burn_in, bool) or not isinstance(burn_in, int) or burn_in < 0:
        raise ValueError(f"bayesian_dark_knowledge: burn_in must be an int >= 0, got {burn_in!r}")
    t_kwargs: dict[str, Any] = {} if train_kwarg is None else {train_kwarg: False}
    student_step = make_train_step(
        objective(teacher_apply, {}, [kd_term(temperature=1.0)], train_kwarg=train_kwarg),
        donate=False,
    )

    def init(teacher_params: Any, student: TrainState, *, key: jax.Array):
        return BayesianDarkKnowledgeState(jnp.zeros((), jnp.int32), teacher_params, student, key)

    def potential(theta, x, y):
        logits = teacher_apply({"params": theta}, x, **t_kwargs)
        nll = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        prior = 0.5 * prior_precision * sum(jnp.sum(jnp.square(p)) for p in jax.tree.leaves(theta))
        return num_train * nll + prior, nll

    @jax.jit
    def step(state: BayesianDarkKnowledgeState, batch):
        x, y = batch
        key, k_sgld, k_noise = jax.random.split(state.key, 3)
        eta = learning_rate(state.step) if callable(learning_rate) else learning_rate
        (_, nll), grads = jax.value_and_grad(potential, has_aux=True)(state.teacher_params, x, y)
        theta = sgld_step(state.teacher_params, grads, key=k_sgld, learning_rate=eta)
        x_s = x + input_noise * jax.random.normal(k_noise, x.shape, x.dtype)
        t_logits = teacher_apply({"params": theta}, x_s, **t_kwargs)
        sbatch = (x_s, y, t_logits)
        _, m_shape = jax.eval_shape(student_step, state.student, sbatch)

        def learn(s):
            return student_step(s, sbatch)

        def wait(s):
            return s, jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), m_shape)

        student, m = jax.lax.cond(state.step >= burn_in, learn, wait, state.student)
        metrics = {"teacher_nll": nll, "student_loss": m["loss"], "student_accuracy": m["accuracy"]}
        return BayesianDarkKnowledgeState(state.step + 1, theta, student, key), metrics

    return BayesianDarkKnowledge(init, step)
