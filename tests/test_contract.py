"""The contract every public transform meets.

Each package lists its transforms in a file ``tests/_cases_<package>.py`` that defines
``CASES``, a list of ``(name, factory)`` pairs; ``factory()`` builds the transform with the
hyperparameters to test. This file collects them all. Each case runs on the tiny conv+dense
params of ``conftest.py`` and on an ``nnx.State``, and is checked for:

* ``apply`` keeps the params' structure, shapes and dtypes; ``finalize`` has it as a prefix;
* ``jit`` equals no ``jit`` for ``apply`` and ``update``;
* it works inside ``chain`` and ``partition`` (the other group's leaves are left untouched);
* the state's structure, shapes and dtypes are stable across ``update``;
* ``update`` compiles once across steps (no recompilation from a changing step);
* ``apply`` is differentiable in ``cparams`` with finite gradients;
* where a transform has an ``apply_own``, it equals ``apply`` in value and gradient on the
  ``cparams`` that ``init`` and ``update`` produce after optimizer-like perturbations, alone, as
  the last transform of a ``chain`` and inside a ``partition``.
"""

import importlib
import pathlib
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc
from experiments import composition

CORE_CASES = [
    ("identity", lambda: jc.identity()),
    ("chain()", lambda: jc.chain()),
    ("chain(identity, identity)", lambda: jc.chain(jc.identity(), jc.identity())),
    ("masked(identity, kernels)", lambda: jc.masked(jc.identity(), jc.select.kernels())),
]


def _collect():
    cases = list(CORE_CASES)
    for f in sorted(pathlib.Path(__file__).parent.glob("_cases_*.py")):
        cases += importlib.import_module(f.stem).CASES
    names = [c[0] for c in cases]
    assert len(set(names)) == len(names), "contract case names must be unique"
    return cases


CASES = _collect()


def _sds(tree):
    return jax.tree.map(lambda x: (x.shape, x.dtype), tree)


def _assert_tree_equal(a, b, tol=1e-6):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=tol, atol=tol), a, b)


@pytest.fixture(scope="module")
def nnx_state():
    # the linen Dense layers' shapes, so the eager ops the cases run on them compile once
    model = nnx.Sequential(
        nnx.Linear(144, 16, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(16, 3, rngs=nnx.Rngs(1))
    )
    return nnx.split(model)[1]


@pytest.fixture(params=["linen", "nnx"])
def kind(request):
    return request.param


@pytest.fixture
def params(kind, tiny_params, nnx_state):
    return tiny_params if kind == "linen" else nnx_state


_BUILT = {}


def _built(name, factory, kind, params):
    """One case on one params tree, built once and shared by the properties below: the
    transform, its ``init``, its eager ``apply``, and its compiled functions (XLA compiling them
    is most of this file's time): ``apply`` with the gradient of a loss of its output, and
    ``update`` with the step and the gradients as arguments."""
    key = (name, kind)
    if key not in _BUILT:
        t = factory()
        c, s = t.init(params)

        def apply_and_grad(c, s):
            loss = lambda c: sum(jnp.sum(x**2) for x in jax.tree.leaves(t.apply(c, s)))
            return t.apply(c, s), jax.grad(loss)(c)

        _BUILT[key] = types.SimpleNamespace(
            t=t,
            c=c,
            s=s,
            out=t.apply(c, s),
            apply_and_grad=jax.jit(apply_and_grad),
            update=jax.jit(lambda c, s, step, grads: t.update(c, s, step=step, grads=grads)),
        )
    return _BUILT[key]


@pytest.mark.parametrize("name,factory", CASES, ids=[c[0] for c in CASES])
def test_structure_and_dtypes_kept(name, factory, kind, params):
    b = _built(name, factory, kind, params)
    assert _sds(b.out) == _sds(params)
    fin = b.t.finalize(b.c, b.s)
    jax.tree.map(lambda *_: None, params, fin)  # params' structure is a prefix of finalize's


@pytest.mark.parametrize("name,factory", CASES, ids=[c[0] for c in CASES])
def test_jit_equals_no_jit(name, factory, kind, params):
    b = _built(name, factory, kind, params)
    t, c, s = b.t, b.c, b.s
    jitted = b.apply_and_grad(c, s)[0] if kind == "linen" else jax.jit(t.apply)(c, s)
    _assert_tree_equal(jitted, b.out)
    g = jax.tree.map(jnp.ones_like, c)
    step = jnp.int32(1)
    _assert_tree_equal(b.update(c, s, step, g), t.update(c, s, step=step, grads=g))


def _shared_trainables(t, params):
    """True for a transform whose cparams cannot be placed at leaf paths (a shared prior)."""
    c, _ = t.init(params)
    try:
        jax.tree.structure(params).flatten_up_to(c)
    except (ValueError, TypeError):
        return True
    return False


@pytest.mark.parametrize("name,factory", CASES, ids=[c[0] for c in CASES])
def test_inside_chain_and_partition(name, factory, tiny_params):
    b = _built(name, factory, "linen", tiny_params)
    t = b.t
    ch = jc.chain(jc.identity(), t)
    cc, cs = ch.init(tiny_params)
    _assert_tree_equal(ch.apply(cc, cs), b.out)
    labels = jax.tree_util.tree_map_with_path(
        lambda p, _: "t" if jc.core.path_str(p).startswith("Dense") else "keep", tiny_params
    )
    part = jc.partition({"t": t, "keep": jc.identity()}, labels)
    if _shared_trainables(t, tiny_params):  # refused, never placed under a label
        with pytest.raises(jc.errors.StructureMismatchError, match="its own where="):
            part.init(tiny_params)
        return
    pc, ps = part.init(tiny_params)
    # paths are kept: every leaf of the partition's cparams sits under a params path
    params_paths = jc.core.leaf_paths(tiny_params)
    for path in jc.core.leaf_paths(pc):
        assert any(path == q or path.startswith(q + "/") for q in params_paths), path
    out = part.apply(pc, ps)
    assert _sds(out) == _sds(tiny_params)
    _assert_tree_equal(out["Conv_0"], tiny_params["Conv_0"])
    pc, ps = jax.jit(lambda c, s: part.update(c, s, step=jnp.int32(1)))(pc, ps)
    _assert_tree_equal(part.apply(pc, ps)["Conv_0"], tiny_params["Conv_0"])


@pytest.mark.parametrize("name,factory", CASES, ids=[c[0] for c in CASES])
def test_state_stable_and_no_recompilation(name, factory, tiny_params):
    b = _built(name, factory, "linen", tiny_params)
    c, s = b.c, b.s
    shapes_c, shapes_s = _sds(c), _sds(s)
    for step in range(1, 4):
        c, s = b.update(c, s, jnp.int32(step), c)
        assert _sds(c) == shapes_c and _sds(s) == shapes_s
    # one compilation for every call so far, test_jit_equals_no_jit's included
    assert b.update._cache_size() == 1


@pytest.mark.parametrize("name,factory", CASES, ids=[c[0] for c in CASES])
def test_differentiable(name, factory, tiny_params):
    b = _built(name, factory, "linen", tiny_params)
    _, g = b.apply_and_grad(b.c, b.s)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))


OWN_CASES = [c for c in CASES if c[1]().apply_own is not None]


_PAIRS = [(a, b) for a in CASES for b in CASES]


@settings(max_examples=6, deadline=None)
@given(st.sampled_from(_PAIRS))
def test_every_ordered_pair_composes_or_is_refused(tiny_params, pair):
    """Property over all ordered pairs of contract cases: ``chain(a, b)`` is refused at init
    with a ValueError, or its baked model is its trained model (after updates too). A sample per
    run; ``python -m experiments.composition`` runs the full matrix (docs/results/composition.md).
    """
    (_, a), (_, b) = pair
    composition.check_pair(a, b, tiny_params, updates=1)


def test_composition_experiment_smoke():
    out = composition.main(["--smoke"])
    assert out["pairs"] == 4 and out["failed"] == 0
    assert out["composes"] + out["refused"] == 4


@pytest.mark.parametrize("order", ["prune_then_quant", "quant_then_prune"])
def test_prune_and_fake_quant_bake_to_int8_codes_with_zeros(order):
    params = {"Dense_0": {"kernel": jax.random.normal(jax.random.key(0), (40, 50))}}
    prune = jc.prune.magnitude(sparsity=0.9)
    quant = jc.quant.fake_quant(bits=8)
    t = jc.chain(prune, quant) if order == "prune_then_quant" else jc.chain(quant, prune)
    c, s = t.init(params)
    q = t.finalize(c, s)["Dense_0"]["kernel"]
    assert isinstance(q, jc.quant.QuantizedArray) and q.codes.dtype == jnp.int8
    assert int(jnp.sum(q.codes == 0)) == 1800  # 90% of 2000, exactly
    _assert_tree_equal(jc.to_dense(t.finalize(c, s)), t.apply(c, s))


def _public_factories():
    import inspect

    out = []
    for pkg in (jc.prune, jc.quant, jc.lowrank, jc.structured):
        for n in pkg.__all__:
            f = getattr(pkg, n)
            if callable(f) and not isinstance(f, type):
                ann = inspect.signature(f).return_annotation
                if "Transform" in str(ann):
                    out.append(f"{pkg.__name__.rsplit('.', 1)[-1]}.{n}")
    return out


def test_every_public_transform_factory_is_a_contract_case():
    covered = {name.split("(")[0] for name, _ in CASES}
    factories = _public_factories()
    assert len(factories) > 20
    missing = sorted(set(factories) - covered)
    assert not missing, f"public transform factories without a contract case: {missing}"


def _own_matches(t, params, update=None):
    """``update``: ``t``'s update with the step and gradients as arguments (its compiled one
    when built, else ``t.update`` runs eagerly: its ops on these shapes ran before, so nothing new
    compiles)."""
    c, s = t.init(params)
    if update is None:
        update = lambda c, s, step, grads: t.update(c, s, step=step, grads=grads)
    keys = iter(jax.random.split(jax.random.key(3), 64))
    for step in range(1, 4):  # an "optimizer" moves every weight, pruned ones included
        c = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(next(keys), x.shape, x.dtype), c)
        c, s = update(c, s, jnp.int32(step), c)
    own = jc.core.own_apply(t)
    assert own is t.apply_own
    _assert_tree_equal(own(c, s), t.apply(c, s), tol=0)
    w = jax.tree.map(lambda x: jax.random.normal(next(keys), x.shape, x.dtype), t.apply(c, s))
    loss = lambda fn: (
        lambda c: sum(
            jnp.sum(a * jnp.sin(b)) for a, b in zip(jax.tree.leaves(w), jax.tree.leaves(fn(c, s)))
        )
    )
    _assert_tree_equal(jax.grad(loss(own))(c), jax.grad(loss(t.apply))(c), tol=0)


@pytest.mark.parametrize("name,factory", OWN_CASES, ids=[c[0] for c in OWN_CASES])
def test_apply_own_equals_apply(name, factory, tiny_params):
    b = _built(name, factory, "linen", tiny_params)
    t = b.t
    _own_matches(t, tiny_params, b.update)
    _own_matches(jc.chain(jc.identity(), t), tiny_params)
    labels = jax.tree_util.tree_map_with_path(
        lambda p, _: "t" if jc.core.path_str(p).startswith("Dense") else "keep", tiny_params
    )
    _own_matches(jc.partition({"t": t, "keep": jc.identity()}, labels), tiny_params)


def test_apply_own_only_where_it_is_the_chains_input(tiny_params):
    """A pruner before another transform sees that transform's output, not its own cparams."""
    shift = jc.Transform(
        init=lambda p: (p, jc.core.EmptyState()),
        apply=lambda c, s: jax.tree.map(lambda x: x + 1.0, c),
        update=lambda c, s, *, step, grads=None: (c, s),
        finalize=lambda c, s: c,
    )
    t = jc.prune.magnitude(sparsity=0.5, where=jc.select.kernels())
    ch = jc.chain(t, shift)
    assert ch.apply_own is None
    c, s = ch.init(tiny_params)
    out = jc.core.own_apply(ch)(c, s)
    masks = s.states[0].masks
    for layer in ("Conv_0", "Dense_0", "Dense_1"):
        kernel, m = out[layer]["kernel"], masks[layer]["kernel"]
        assert int(jnp.sum(kernel == 0)) == int(jnp.sum(~m)) > 0
