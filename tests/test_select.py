"""Leaf selection: predicates, boolean trees, ordered regex rules and their errors."""

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jaxcomp as jc
from jaxcomp.errors import SelectionError


def _params():
    return {
        "Conv_0": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.ones(4)},
        "Dense_0": {"kernel": jnp.ones((8, 4)), "bias": jnp.ones(4)},
        "BatchNorm_0": {"scale": jnp.ones(4)},
    }


def _selected(mask):
    return sorted(jc.core.path_str(p) for p, v in jax.tree_util.tree_leaves_with_path(mask) if v)


def test_kernels_default():
    assert _selected(jc.select.resolve(None, _params())) == ["Conv_0/kernel", "Dense_0/kernel"]


def test_composition():
    sel = jc.select.kernels() & ~jc.select.by_regex("^Conv") | jc.select.by_regex("scale")
    assert _selected(jc.select.resolve(sel, _params())) == ["BatchNorm_0/scale", "Dense_0/kernel"]
    assert _selected(jc.select.resolve(jc.select.min_size(9), _params())) == [
        "Conv_0/kernel",
        "Dense_0/kernel",
    ]


def test_rules_first_match_wins():
    rules = [("Dense_0/kernel", False), ("kernel", True)]
    assert _selected(jc.select.resolve(rules, _params())) == ["Conv_0/kernel"]
    values = jc.select.resolve_rules([("Conv", 8), ("Dense", 4)], _params(), default=32)
    assert values["Conv_0"]["kernel"] == 8 and values["BatchNorm_0"]["scale"] == 32


def test_rule_that_matches_nothing_names_it():
    with pytest.raises(SelectionError, match="Dens_0"):
        jc.select.resolve([("Dens_0", True)], _params())


def test_uncovered_leaf_without_default_names_it():
    with pytest.raises(SelectionError, match="BatchNorm_0/scale"):
        jc.select.resolve_rules([("Conv", 1), ("Dense", 2)], _params())


def test_selects_nothing_is_an_error():
    with pytest.raises(SelectionError, match="selects no leaf"):
        jc.select.resolve(jc.select.by_regex("nothing"), _params())


def test_bool_tree_and_bad_tree():
    mask = jax.tree.map(lambda _: False, _params())
    mask["Dense_0"]["bias"] = True
    assert _selected(jc.select.resolve(mask, _params())) == ["Dense_0/bias"]
    with pytest.raises(SelectionError, match="structure"):
        jc.select.resolve({"Dense_0": True}, _params())


def test_bad_regex():
    with pytest.raises(SelectionError, match="valid regex"):
        jc.select.by_regex("(")


def test_nnx_state_paths_match_linen():
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    _, state = nnx.split(model)
    assert _selected(jc.select.resolve(None, state)) == ["kernel"]
    t = jc.masked(jc.identity(), jc.select.kernels())
    c, s = t.init(state)
    out = t.apply(c, s)
    assert jax.tree.structure(out) == jax.tree.structure(state)
