"""jaxcomp.core's per-leaf mapper and checks module."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxcomp as jc
from jaxcomp.core import checks
from jaxcomp.errors import SelectionError


def _params():
    return {
        "Conv_0": {"kernel": jnp.ones((3, 3, 2, 4)), "bias": jnp.zeros(4)},
        "Dense_0": {"kernel": jnp.ones((8, 3)), "bias": jnp.zeros(3)},
        "Dense_1": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)},
    }


def test_select_resolves_per_leaf_rules_dicts_defaults_and_derived_values():
    spec = jc.core.select(
        _params(), None, fn="t", bits=[("Dense", 4), ("Conv", 8)], axis=[("Dense_1", 0)],
        defaults={"axis": None}, derive=lambda leaf, x: {"ndim": x.ndim},
    )  # fmt: skip
    got = [(lf.path, lf.index, lf["bits"], lf["axis"], lf["ndim"]) for lf in jc.core.leaves(spec)]
    assert got == [
        ("Conv_0/kernel", 0, 8, None, 4),
        ("Dense_0/kernel", 1, 4, None, 2),
        ("Dense_1/kernel", 2, 4, 0, 2),
    ]
    assert isinstance(spec["Dense_0"]["bias"], jc.core.MaskedNode)
    d = {"Conv_0/kernel": 1, "Dense_0/kernel": 2, "Dense_1/kernel": 3}
    spec = jc.core.select(_params(), None, fn="t", bits=d)
    assert [lf["bits"] for lf in jc.core.leaves(spec)] == [1, 2, 3]


@pytest.mark.parametrize(
    "bits,match",
    [
        ([("Dense", 4)], r"t: bits: no rule covers \['Conv_0/kernel'\] and there is no default"),
        ([("Conv", 4), ("Dense", 2), ("BatchNorm", 1)], r"rules \['BatchNorm'\] match no leaf"),
        ({"Conv_0/kernel": 4}, r"missing \['Dense_0/kernel', 'Dense_1/kernel'\]"),
        ([("(", 4)], "not a valid regex"),
    ],
)
def test_per_leaf_values_that_do_not_fit_the_selection_name_the_paths(bits, match):
    with pytest.raises(SelectionError, match=match):
        jc.core.select(_params(), None, fn="t", bits=bits)


def test_map_leaves_replaces_selected_leaves_by_subtrees_at_their_own_paths():
    p = _params()
    spec = jc.core.select(p, jc.select.by_regex("Dense"), fn="t")  # kernels and biases
    out = jc.core.map_leaves(lambda lf, x, y: {"u": x + y, "i": lf.index}, spec, p, p)
    assert jc.core.leaf_paths(out)[:2] == ["Conv_0/bias", "Conv_0/kernel"]  # untouched
    assert "Dense_0/kernel/u" in jc.core.leaf_paths(out)
    assert out["Dense_1"]["kernel"]["i"] == 3
    np.testing.assert_array_equal(out["Dense_0"]["kernel"]["u"], 2 * p["Dense_0"]["kernel"])
    # a state tree: values at the selected leaves, placeholders elsewhere; it is a spec too
    st = jc.core.map_state(lambda lf, x: x.shape, spec, p)
    assert st["Dense_0"]["kernel"] == (8, 3) and isinstance(
        st["Conv_0"]["kernel"], jc.core.MaskedNode
    )
    masks = jc.core.map_state(lambda lf, x: x > 0, spec, p)
    assert [lf.path for lf in jc.core.leaves(masks)] == [lf.path for lf in jc.core.leaves(spec)]


def test_a_spec_is_static_under_jit_and_per_leaf_keys_differ():
    p = _params()
    spec = jc.core.select(p, None, fn="t", bits=3)
    traces = []

    @jax.jit
    def f(spec, p):
        traces.append(1)
        return jc.core.map_leaves(lambda lf, x: x * lf["bits"], spec, p)

    f(spec, p)
    f(jc.core.select(p, None, fn="t", bits=3), jax.tree.map(lambda x: x + 1, p))
    assert len(traces) == 1  # an equal spec is the same static structure: no retrace
    assert jax.tree.leaves(spec) == []  # no arrays
    key = jax.random.key(0)
    draws = [jax.random.uniform(jc.core.leaf_key(key, lf)) for lf in jc.core.leaves(spec)]
    assert len({float(d) for d in draws}) == 3
    raw = jax.random.key_data(key)  # raw key data, as states keep it, gives the same keys
    assert float(jax.random.uniform(jc.core.leaf_key(raw, jc.core.leaves(spec)[1]))) == float(
        draws[1]
    )


_bits = lambda v, n: checks.bits(v, fn="f", name=n)
_BAD = [
    (lambda: checks.fraction(1.0, fn="f", name="s"), "f: s must be a number in [0, 1), got 1.0"),
    (lambda: checks.integer(True, fn="f", name="n"), "f: n must be an int >= 1, got True"),
    (lambda: checks.bits(17, fn="f"), "f: bits must be an int in [1, 16], got 17"),
    (
        lambda: checks.key(0, fn="f", why="rounding='stochastic'"),
        "f: key (needed by rounding='stochastic') must be a typed PRNG key",
    ),
    (
        lambda: checks.choice("x", ("a", "b"), fn="f", name="kind"),
        "f: kind must be one of ('a', 'b'), got 'x'",
    ),
    (
        lambda: checks.schedule_or_number(lambda s: 1.5, fn="f", name="s"),
        "f: s must stay in [0, 1)",
    ),
    (lambda: checks.axis(2, 2, fn="f"), "f: axis must be an int in [-2, 1], got 2"),
    (
        lambda: checks.per_leaf({"a": 0}, _bits, fn="f", name="bits"),
        "f: bits['a'] must be an int in [1, 16], got 0",
    ),
]


@pytest.mark.parametrize("call,message", _BAD)
def test_checks_name_the_factory_the_argument_and_the_range(call, message):
    with pytest.raises(ValueError) as e:
        call()
    assert str(e.value).startswith(message)


def test_checks_return_canonical_values():
    assert checks.fraction(0, fn="f", name="s") == 0.0
    assert checks.axis(-1, 4, fn="f") == 3
    assert checks.per_leaf([("a", 2)], lambda v, n: v * 2, fn="f", name="x") == [("a", 4)]
