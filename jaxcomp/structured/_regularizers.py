"""Group-lasso penalties that train whole structures to zero: SSL and group-sparse neurons.

Both take the dependency groups of :func:`jaxcomp.structured.groups` and return a jit-able
``penalty(cparams, state=None) -> scalar`` for :func:`jaxcomp.train.make_train_step`
``(penalty=...)``. ``cparams`` is the params tree (paths without the ``"params/"`` that the groups'
members carry; a full variables tree works too); members in other collections (batch statistics)
are not trained and are passed over. Norms have derivative 0 at a zero group, so pruned structures
do not make the gradient NaN.

* :func:`ssl_penalty`, Structured Sparsity Learning: a group lasso (sum of L2 norms) over
  **filters** (the output features of every kernel that writes a group's channel: one norm per
  writer and channel), **channels** (the input features of every kernel that reads one), filter
  **shapes** (the im2col rows ``W[i, j, c, :]`` of every convolution kernel in the groups, as in
  :func:`jaxcomp.structured.brain_damage_penalty`) and **depth** (the whole kernel of each layer in
  the groups), each with its own strength. Only structures that can be removed are penalized: the
  filters of the output layer and the channels of the input are tied and in no group.
* :func:`neuron_group_penalty`, group-sparse neurons: the sparse group lasso over each channel of
  each group, all of its weights across the group's members together (the filter that writes it,
  its bias and batch-norm scale and offset, the next layers' weights that read it):
  ``strength * sum_c sqrt(P_c) ||theta_c||_2 + l1 * ||theta||_1 + l2 * ||theta||_2^2``, where
  ``P_c`` is the number of weights of channel ``c``. A channel driven to zero by it is removed
  exactly by :func:`jaxcomp.structured.masks` and :func:`jaxcomp.structured.shrink`.

References:
    Wen, Wu, Wang, Chen and Li, "Learning structured sparsity in deep neural networks",
    NeurIPS 2016, arXiv:1608.03665.

    Alvarez and Salzmann, "Learning the number of neurons in deep networks", NeurIPS 2016,
    arXiv:1611.06321.

    Zhou, Alvarez and Porikli, "Less is more: towards compact CNNs", ECCV 2016.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core import _checks as checks
from jaxcomp.structured._brain_damage import row_norms
from jaxcomp.structured._brain_damage import safe_sqrt
from jaxcomp.structured._criteria import _by_path
from jaxcomp.structured._criteria import _lookup
from jaxcomp.structured._criteria import _per_channel
from jaxcomp.structured._graph import Group
from jaxcomp.structured._graph import Member

__all__ = ["neuron_group_penalty", "ssl_penalty"]

ROLES = ("out", "in", "other")
_SUMSQ = lambda r: jnp.sum(jnp.square(r), axis=1)


def check_groups(groups: Any, fn: str) -> tuple[Group, ...]:
    """The groups as a tuple, or a ValueError naming ``fn``."""
    if not isinstance(groups, Sequence) or not all(isinstance(g, Group) for g in groups):
        raise ValueError(
            f"{fn}: groups must be the jaxcomp.structured.Groups of jc.structured.groups(...) "
            f"(or a sequence of Group), got {type(groups).__name__}"
        )
    if not len(groups):
        raise ValueError(f"{fn}: groups is empty; the model has no channel that can be removed")
    return tuple(groups)


def _trained(m: Member) -> bool:
    return m.path.split("/", 1)[0] == "params"


def _leaf(leaves: dict[str, Any], m_path: str, fn: str) -> jax.Array:
    leaf = _lookup(leaves, m_path)
    if leaf is None:
        raise ValueError(
            f"{fn}: cparams has no leaf {m_path!r} (nor {m_path.split('/', 1)[-1]!r}) that the "
            "groups name; pass the params of the model the groups were traced from"
        )
    return jnp.asarray(leaf, jnp.float32)


def _kernels(groups: tuple[Group, ...]) -> list[str]:
    """The paths of the kernels that write or read a group's channel, in order, once each."""
    out: dict[str, None] = {}
    for g in groups:
        for m in g.members:
            if m.role in ("out", "in") and _trained(m):
                out.setdefault(m.path)
    return list(out)


def ssl_penalty(
    groups: Any,
    *,
    filters: float = 0.0,
    channels: float = 0.0,
    shapes: float = 0.0,
    depth: float = 0.0,
) -> Callable[..., jax.Array]:
    """Structured Sparsity Learning's group lasso over filters, channels, shapes and depth.

    Args:
        groups: the model's :class:`jaxcomp.structured.Groups`.
        filters: the strength of ``sum over writers and channels of ||W[..., c]||_2`` (each
            kernel's output features that write a group's channel ``c``), ``>= 0``.
        channels: the strength of ``sum over readers and channels of ||W[..., c, :]||_2`` (each
            kernel's input features that read a group's channel; all the rows a flatten gives the
            channel count as one group), ``>= 0``.
        shapes: the strength of ``sum over rows (i, j, c) of ||W[i, j, c, :]||_2`` of every
            convolution kernel (``ndim >= 3``) in the groups, ``>= 0``.
        depth: the strength of ``sum over layers of ||W||_F``, every kernel in the groups,
            ``>= 0``.

    Returns:
        ``penalty(cparams, state=None) -> scalar`` (jit-able; the state is ignored).

    Raises:
        ValueError: a negative strength, all four zero, or ``groups`` not groups.

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> import jaxcomp as jc
        >>> model = nn.Sequential([nn.Dense(3), nn.relu, nn.Dense(2)])
        >>> variables = model.init(jax.random.key(0), jnp.ones((1, 2)))
        >>> gs = jc.structured.groups(model.apply, variables, jnp.ones((1, 2)))
        >>> pen = ssl_penalty(gs, filters=1e-3, channels=1e-3)
        >>> float(jax.jit(pen)(variables["params"])) > 0
        True
    """
    fn = "ssl_penalty"
    groups = check_groups(groups, fn)
    strengths = {
        n: checks.number(v, fn=fn, name=n, low=0)
        for n, v in (("filters", filters), ("channels", channels), ("shapes", shapes),
                     ("depth", depth))
    }  # fmt: skip
    if not any(strengths.values()):
        raise ValueError(f"{fn}: give at least one of filters=, channels=, shapes=, depth= > 0")
    by_role = {
        role: [(g.size, m) for g in groups for m in g.members if m.role == role and _trained(m)]
        for role in ("out", "in")
    }
    kernels = _kernels(groups)

    def penalty(cparams: Any, state: Any = None) -> jax.Array:
        del state
        leaves = _by_path(cparams)
        total = jnp.float32(0)
        for name, role in (("filters", "out"), ("channels", "in")):
            if strengths[name]:
                s = sum(
                    jnp.sum(safe_sqrt(_per_channel(_leaf(leaves, m.path, fn), m, n, _SUMSQ)))
                    for n, m in by_role[role]
                )
                total = total + strengths[name] * s
        ws = [_leaf(leaves, p, fn) for p in kernels]
        if strengths["shapes"]:
            s = sum(jnp.sum(row_norms(w)) for w in ws if w.ndim >= 3)
            total = total + strengths["shapes"] * s
        if strengths["depth"]:
            total = total + strengths["depth"] * sum(safe_sqrt(jnp.sum(jnp.square(w))) for w in ws)
        return total

    return penalty


def _counts(group: Group, members: list[Member], leaves: dict[str, Any]) -> np.ndarray:
    """How many weights each channel of ``group`` has in ``members`` (static: shapes only)."""
    counts = np.zeros(group.size, np.int64)
    for m in members:
        shape = np.shape(_lookup(leaves, m.path))
        per_position = int(np.prod(shape, dtype=np.int64)) // shape[m.axis]
        valid = m.index[m.index >= 0]
        counts += np.bincount(valid, minlength=group.size) * per_position
    return counts


def neuron_group_penalty(
    groups: Any,
    *,
    strength: float,
    l1: float = 0.0,
    l2: float = 0.0,
    roles: Sequence[str] = ROLES,
) -> Callable[..., jax.Array]:
    """The sparse group lasso over every channel of every group (group-sparse neurons).

    ``strength * sum over groups and channels c of sqrt(P_c) * ||theta_c||_2``, where
    ``theta_c`` is every weight of channel ``c`` in the group's members of the given ``roles``
    (``P_c`` of them), plus ``l1 * sum |w|`` and ``l2 * sum w**2`` over the leaves those members
    name (each leaf once). Its gradient at a nonzero channel is
    ``strength * sqrt(P_c) * theta_c / ||theta_c||`` (plus that of the ``l1``/``l2`` terms, and of
    other groups that share the leaf along another axis).

    Args:
        groups: the model's :class:`jaxcomp.structured.Groups`.
        strength: the group-lasso coefficient, ``>= 0``.
        l1: the coefficient of the L1 term (the sparse group lasso of Alvarez and Salzmann),
            ``>= 0``.
        l2: the coefficient of a squared L2 term (weight decay), ``>= 0``.
        roles: which members form a channel's weights, a non-empty subset of
            ``("out", "in", "other")``: ``("out",)`` is the paper's group (the weights into the
            neuron), the default is every weight that removing the channel removes.

    Returns:
        ``penalty(cparams, state=None) -> scalar`` (jit-able; the state is ignored).

    Raises:
        ValueError: a negative coefficient, ``roles`` not a non-empty subset of the roles, or
            ``groups`` not groups.

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> import jaxcomp as jc
        >>> model = nn.Sequential([nn.Dense(3), nn.relu, nn.Dense(2)])
        >>> variables = model.init(jax.random.key(0), jnp.ones((1, 2)))
        >>> gs = jc.structured.groups(model.apply, variables, jnp.ones((1, 2)))
        >>> pen = neuron_group_penalty(gs, strength=1e-3)
        >>> zero = jax.tree.map(jnp.zeros_like, variables["params"])
        >>> float(pen(zero)), jax.grad(pen)(zero)["layers_0"]["kernel"].tolist()
        (0.0, [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    """
    fn = "neuron_group_penalty"
    groups = check_groups(groups, fn)
    strength = checks.number(strength, fn=fn, name="strength", low=0)
    l1 = checks.number(l1, fn=fn, name="l1", low=0)
    l2 = checks.number(l2, fn=fn, name="l2", low=0)
    if isinstance(roles, str) or not isinstance(roles, Sequence) or not roles:
        raise ValueError(f"{fn}: roles must be a non-empty sequence of {ROLES}, got {roles!r}")
    for r in roles:
        checks.choice(r, ROLES, fn=fn, name="roles[...]")
    chosen = [[m for m in g.members if m.role in roles and _trained(m)] for g in groups]
    paths = list(dict.fromkeys(m.path for ms in chosen for m in ms))

    def penalty(cparams: Any, state: Any = None) -> jax.Array:
        del state
        leaves = _by_path(cparams)
        total = jnp.float32(0)
        for g, members in zip(groups, chosen):
            if not members:
                continue
            sq = sum(_per_channel(_leaf(leaves, m.path, fn), m, g.size, _SUMSQ) for m in members)
            weight = np.sqrt(_counts(g, members, leaves)).astype(np.float32)
            total = total + strength * jnp.sum(jnp.asarray(weight) * safe_sqrt(sq))
        if l1 or l2:
            ws = [_leaf(leaves, p, fn) for p in paths]
            total = total + l1 * sum(jnp.sum(jnp.abs(w)) for w in ws)
            total = total + l2 * sum(jnp.sum(jnp.square(w)) for w in ws)
        return total

    return penalty
