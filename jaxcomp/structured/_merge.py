"""Data-free neuron merging: remove a hidden neuron, fold its outgoing weights into its twin.

Two hidden neurons ``i`` and ``j`` of ``Dense -> h -> Dense`` with the same incoming weights and
bias compute the same activation, so ``a_i h(w_i x) + a_j h(w_j x) = (a_i + a_j) h(w_i x)``: ``j``
can be removed and its outgoing weights ``a_j`` added to ``a_i`` with no change to the function,
for any elementwise ``h``. Srinivas and Babu extend this to neurons that are only similar: the
saliency of removing ``j`` into ``i`` is ``<a_j^2> ||w_i - w_j||^2`` (the mean squared outgoing
weight of ``j`` times the distance of the incoming weights, bias included), and the pair of
smallest saliency is merged, one neuron at a time, the saliencies updated after each merge. No
data is needed.

:func:`merge_neurons` does this over one dependency group of :func:`jaxcomp.structured.groups`
whose channels are written by one ``Dense`` kernel (with its bias) and read by one ``Dense``
kernel, and returns the masks and the updated variables; :func:`jaxcomp.structured.shrink` then
gives the smaller model.

``scaled=True`` also merges a neuron into a positively scaled copy: for ``w_j = s w_i`` with
``s > 0`` and a positively homogeneous activation (ReLU, leaky ReLU),
``h(w_j x) = s h(w_i x)``, so ``a_i`` gains ``s a_j``; the saliency uses the distance of ``w_j``
to ``s w_i`` (``s`` the projection of ``w_j`` on ``w_i``, zero when negative). This is an
extension of the paper, exact only for such activations.

References:
    Srinivas and Babu, "Data-free parameter pruning for deep neural networks", BMVC 2015,
    arXiv:1507.06149.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxcomp.core._tree import path_str
from jaxcomp.structured._criteria import _by_path
from jaxcomp.structured._criteria import _check_ratio
from jaxcomp.structured._graph import Group
from jaxcomp.structured._graph import Groups
from jaxcomp.structured._graph import Member
from jaxcomp.structured._graph import groups as trace_groups
from jaxcomp.structured._shrink import Masks

__all__ = ["merge_neurons", "pick_group", "replace_leaves"]


def pick_group(groups: Groups, group: Any, fn: str) -> tuple[int, Group]:
    """``(index, Group)`` for an int index into ``groups`` or one of its :class:`Group` s."""
    if isinstance(group, Group):
        for gi, g in enumerate(groups):
            if g is group:
                return gi, g
        raise ValueError(f"{fn}: group {group!r} is not one of the groups of this model")
    if isinstance(group, bool) or not isinstance(group, int | np.integer):
        raise ValueError(
            f"{fn}: group must be an int index into the groups or a Group, got {group!r}"
        )
    if not -len(groups) <= group < len(groups):
        raise ValueError(f"{fn}: group must be in [0, {len(groups)}), got {group}")
    return int(group) % len(groups), groups[int(group)]


def replace_leaves(variables: Any, new: dict[str, Any]) -> Any:
    """``variables`` with the leaves at the ``/``-joined paths of ``new`` replaced."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(variables)
    out = []
    for p, leaf in flat:
        v = new.get(path_str(p))
        out.append(leaf if v is None else jnp.asarray(v, jnp.result_type(leaf)))
    return jax.tree_util.tree_unflatten(treedef, out)


def _positions(m: Member, size: int, gi: int, fn: str) -> np.ndarray:
    """The one position of each channel along the member's axis."""
    pos = np.full(size, -1, np.int64)
    counts = np.bincount(m.index[m.index >= 0], minlength=size)
    if (counts != 1).any():
        raise ValueError(
            f"{fn}: group {gi} has several positions per channel in {m.path!r} (a flatten or a "
            "broadcast); neuron merging needs Dense -> activation -> Dense"
        )
    pos[m.index[m.index >= 0]] = np.flatnonzero(m.index >= 0)
    return pos


def _dense_pair(group: Group, gi: int, fn: str) -> tuple[Member, Member, Member | None]:
    outs = [m for m in group.members if m.role == "out"]
    ins = [m for m in group.members if m.role == "in"]
    if len(outs) != 1 or len(ins) != 1:
        raise ValueError(
            f"{fn}: group {gi} has {len(outs)} writer(s) and {len(ins)} reader(s); neuron merging "
            "needs exactly one Dense kernel writing the channels and one Dense kernel reading them"
        )
    out, inp = outs[0], ins[0]
    for m, axis, what in ((out, 1, "writer"), (inp, 0, "reader")):
        if not m.path.endswith("/kernel") or m.axis != axis:
            raise ValueError(
                f"{fn}: group {gi}'s {what} {m.path!r} (axis {m.axis}) is not a Dense kernel's "
                f"{'output' if axis else 'input'} axis; neuron merging needs Dense -> Dense"
            )
    bias_path = out.path[: -len("kernel")] + "bias"
    others = [m for m in group.members if m.role == "other"]
    extra = [m.path for m in others if m.path != bias_path]
    if extra:
        raise ValueError(
            f"{fn}: group {gi} also touches {extra}; merging is exact only when the channels go "
            "straight from one Dense (and its bias) through an elementwise activation to the next"
        )
    return out, inp, (others[0] if others else None)


@jax.jit
def _greedy(incoming: jax.Array, outgoing: jax.Array, k: jax.Array, scaled: jax.Array):
    """Merges ``k < n`` neurons one at a time by Srinivas and Babu's saliency (module docstring)."""
    n = incoming.shape[0]
    gram = incoming @ incoming.T
    sq = jnp.diagonal(gram)
    # s[i, j]: the scale of neuron j as a copy of neuron i (1 without `scaled`)
    proj = jnp.where(sq[:, None] > 0, gram / jnp.where(sq[:, None] > 0, sq[:, None], 1.0), 0.0)
    scale = jnp.where(scaled, jnp.maximum(proj, 0.0), jnp.ones((n, n)))
    # ||w_j - s_ij w_i||^2
    dist = sq[None, :] - 2.0 * scale * gram + jnp.square(scale) * sq[:, None]
    dist = jnp.maximum(dist, 0.0)
    eye = jnp.eye(n, dtype=bool)

    def body(_, carry):
        a, alive = carry
        saliency = dist * jnp.mean(jnp.square(a), axis=1)[None, :]
        valid = alive[:, None] & alive[None, :] & ~eye
        flat = jnp.argmin(jnp.where(valid, saliency, jnp.inf).reshape(-1))
        i, j = flat // n, flat % n
        return a.at[i].add(scale[i, j] * a[j]).at[j].set(0.0), alive.at[j].set(False)

    return jax.lax.fori_loop(0, k, body, (outgoing, jnp.ones(n, bool)))


def merge_neurons(
    apply_fn: Callable[..., Any],
    variables: Any,
    x: Any,
    group: Any,
    *,
    ratio: float,
    scaled: bool = False,
    groups: Groups | None = None,
) -> tuple[Masks, Any]:
    """Removes ``ratio`` of a Dense layer's neurons by merging each into its most similar kept one.

    Args:
        apply_fn: ``apply_fn(variables, x)`` in inference mode.
        variables: the model's variables.
        x: an example input (for tracing the groups only: the method needs no data).
        group: the index of the group in ``groups`` (or the :class:`Group`): the hidden neurons
            of ``Dense -> elementwise activation -> Dense``.
        ratio: the fraction of the group's neurons to remove, in [0, 1); exactly
            ``floor(ratio * size)`` go (at least one neuron stays).
        scaled: also merge positively scaled copies (exact for ReLU; see the module docstring).
        groups: groups already traced from the same model.

    Returns:
        ``(masks, new_variables)``: :class:`Masks` over every group (the others keep all their
        channels), and ``variables`` with the reading kernel's rows of the kept neurons holding
        the merged outgoing weights (the removed neurons' rows at zero). Use
        :func:`jaxcomp.structured.apply_masks` or :func:`jaxcomp.structured.shrink` on them.

    Raises:
        ValueError: a bad ``ratio`` or ``group``, or a group that is not one Dense writing and
            one Dense reading its channels with nothing else in between (a batch norm, a
            residual addition, a flatten).

    Examples:
        >>> import jax, jax.numpy as jnp, flax.linen as nn
        >>> import jaxcomp as jc
        >>> model = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(2)])
        >>> x = jnp.ones((3, 2))
        >>> v = model.init(jax.random.key(0), x)
        >>> k, b = v["params"]["layers_0"]["kernel"], v["params"]["layers_0"]["bias"]
        >>> v["params"]["layers_0"] = {"kernel": k.at[:, 3].set(k[:, 0]), "bias": b}
        >>> masks, merged = merge_neurons(model.apply, v, x, 0, ratio=0.25)
        >>> masks.keep[0].tolist()
        [True, True, True, False]
        >>> small_apply, small = jc.structured.shrink(model.apply, merged, masks)
        >>> bool(jnp.allclose(small_apply(small, x), model.apply(v, x), atol=1e-5))
        True
    """
    fn = "merge_neurons"
    ratio = _check_ratio(ratio)
    if not isinstance(scaled, bool):
        raise ValueError(f"{fn}: scaled must be True or False, got {scaled!r}")
    groups = trace_groups(apply_fn, variables, x) if groups is None else groups
    gi, g = pick_group(groups, group, fn)
    out, inp, bias = _dense_pair(g, gi, fn)
    leaves = _by_path(variables)
    w_out = jnp.asarray(leaves[out.path], jnp.float32)
    w_in = jnp.asarray(leaves[inp.path], jnp.float32)
    p_out, p_in = _positions(out, g.size, gi, fn), _positions(inp, g.size, gi, fn)
    incoming = w_out[:, p_out].T  # (neurons, fan_in)
    if bias is not None:
        b = jnp.asarray(leaves[bias.path], jnp.float32)
        incoming = jnp.concatenate([incoming, b[_positions(bias, g.size, gi, fn)][:, None]], 1)
    outgoing = w_in[p_in]  # (neurons, fan_out)
    k = g.size - max(1, g.size - int(np.floor(ratio * g.size)))
    merged, alive = _greedy(incoming, outgoing, jnp.asarray(k), jnp.asarray(scaled))
    new_in = w_in.at[p_in].set(merged)
    keep = tuple(alive if i == gi else jnp.ones(h.size, bool) for i, h in enumerate(groups))
    return Masks(keep, groups), replace_leaves(variables, {inp.path: new_in})
