"""Structured pruning: dependency groups from the jaxpr, masks, and the physically smaller model.

The defining properties: every member of a group loses the same channels; the smaller model's
outputs equal the masked model's (rtol 1e-5) on LeNet-5, the small VGG, ResNet-20, an NNX model
and a model with a concatenation, depthwise and grouped convolutions, a channel shuffle and a
zero-padded residual; channels tied to the input or output are never removed; a primitive the
analysis cannot follow is an error naming it.
"""

import functools
import itertools
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc
from jaxcomp.errors import UnsupportedPrimitiveError
from jaxcomp.errors import WidthMismatchError


class Odd(nn.Module):
    """Concatenation, depthwise (multiplier 1 and 2) and grouped convolutions, a channel shuffle
    and a residual with zero-padded channels: what the analysis must follow."""

    @nn.compact
    def __call__(self, x):
        a = nn.relu(nn.Conv(12, (3, 3))(x))
        b = nn.relu(nn.BatchNorm(use_running_average=True)(nn.Conv(6, (1, 1))(x)))
        y = jnp.concatenate([a, b], axis=-1)
        y = nn.Conv(18, (3, 3), feature_group_count=18)(y)
        y = nn.Conv(24, (1, 1), feature_group_count=3)(y)
        n, h, w, c = y.shape
        y = y.reshape(n, h, w, 3, c // 3).transpose(0, 1, 2, 4, 3).reshape(n, h, w, c)
        y = nn.Conv(12, (1, 1))(nn.relu(y))
        y = nn.Conv(24, (3, 3), feature_group_count=12)(y)
        y = y + jnp.pad(nn.Conv(20, (1, 1))(y), ((0, 0), (0, 0), (0, 0), (2, 2)))
        return nn.Dense(5)(jnp.mean(y, axis=(1, 2)))


def _random(shapes, seed):
    """Random weights of the given shapes, positive batch-norm variances; numpy draws them, so
    that nothing is compiled per leaf shape (flax's eager init compiles each initializer)."""
    rng = np.random.default_rng(seed)
    out = jax.tree.map(lambda a: jnp.asarray(rng.standard_normal(a.shape), a.dtype), shapes)
    if "batch_stats" in out:
        out["batch_stats"] = jax.tree.map(jnp.abs, out["batch_stats"])
    return out


@functools.cache  # one model and weights per name: tests only read them
def _model(name):
    if name == "odd":
        model, shape = Odd(), (8, 8, 3)
        init = lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)))
    else:  # the CIFAR models at 8x8: the same graph, a quarter of the work
        model, shape = jc.models.get(name), jc.models.input_shape(name)
        shape = (8, 8, 3) if shape == (32, 32, 3) else shape
        init = lambda: jc.models.init(model, jax.random.key(0), shape)
    return model, _random(jax.eval_shape(init), 1), shape


@functools.cache
def _run(name):
    """The jitted dense model (one program per input shape, shared by the tests)."""
    return jax.jit(_model(name)[0].apply)


@pytest.fixture(scope="module", params=["lenet5", "vgg_small", "resnet20", "odd"])
def traced(request):
    model, variables, shape = _model(request.param)
    x = jax.random.normal(jax.random.key(2), (2, *shape))
    if request.param == "odd":  # traced once for the module
        return request.param, model, variables, x, _ODD_GROUPS
    return request.param, model, variables, x, jc.structured.groups(model.apply, variables, x[:1])


def _assert_equal_functions(apply_fn, variables, masks, x, run=None):
    """The smaller model's outputs equal the masked model's; ``run`` is the jitted dense model
    (``apply_fn`` by default)."""
    small_apply, small = jc.structured.shrink(apply_fn, variables, masks)
    masked = (run or jax.jit(apply_fn))(jc.structured.apply_masks(variables, masks), x)
    out = jax.jit(small_apply)(small, x)
    np.testing.assert_allclose(out, masked, rtol=1e-5, atol=1e-5 * float(jnp.abs(masked).max()))
    return small_apply, small


def test_smaller_model_equals_masked_model(traced):
    name, model, variables, x, groups = traced
    masks = jc.structured.masks(model.apply, variables, x, ratio=0.5, groups=groups)
    small_apply, small = _assert_equal_functions(model.apply, variables, masks, x, _run(name))
    dense_flops = jc.analysis.flops(model.apply, variables, x)
    small_flops = jc.analysis.flops(small_apply, small, x)
    assert small_flops < 0.75 * dense_flops, name
    assert jc.analysis.param_count(small) < jc.analysis.param_count(variables)
    flat = {jc.core.path_str(p): leaf for p, leaf in jax.tree_util.tree_leaves_with_path(small)}
    for keep, group in zip(masks.keep, groups):  # exact counts, at least one kept
        assert int(np.sum(keep)) == max(1, group.size - group.size // 2)
        for m in group.members:  # every member lost the same channels
            if (m.index >= 0).all():  # an axis that holds this group alone
                assert flat[m.path].shape[m.axis] == int(np.asarray(keep)[m.index].sum())


def test_taylor_and_global_scope():
    model, variables, shape = _ODD
    x = jax.random.normal(jax.random.key(2), (2, *shape))
    grads = jax.jit(jax.grad(lambda v: jnp.sum(model.apply(v, x) ** 2)))(variables)
    masks = jc.structured.masks(
        model.apply, variables, x, ratio=0.5, criterion="taylor", grads=grads, groups=_ODD_GROUPS
    )
    _assert_equal_functions(model.apply, variables, masks, x, _run("odd"))
    masks = jc.structured.masks(
        model.apply, variables, x, ratio=0.6, scope="global", groups=_ODD_GROUPS
    )
    total = sum(g.size for g in _ODD_GROUPS)
    kept = [int(np.sum(k)) for k in masks.keep]
    assert min(kept) >= 1 and sum(kept) >= total - int(0.6 * total)
    _assert_equal_functions(model.apply, variables, masks, x, _run("odd"))


@settings(max_examples=4, deadline=None)
@given(ratio=st.floats(0.0, 0.95), seed=st.integers(0, 2**16))
def test_odd_model_equality_for_any_ratio(ratio, seed):
    model, variables, shape = _ODD
    variables = _random(variables, seed)
    x = jax.random.normal(jax.random.key(seed + 1), (2, *shape))
    masks = jc.structured.masks(model.apply, variables, x, ratio=ratio, groups=_ODD_GROUPS)
    _assert_equal_functions(model.apply, variables, masks, x, _run("odd"))


_ODD = _model("odd")
_ODD_GROUPS = jc.structured.groups(_ODD[0].apply, _ODD[1], jnp.zeros((1, *_ODD[2])))


def test_lenet5_groups_and_flatten_blocks():
    model, variables, shape = _model("lenet5")
    groups = jc.structured.groups(model.apply, variables, jnp.zeros((1, *shape)))
    assert [g.size for g in groups] == [20, 50, 500]
    conv1 = groups[1]
    rows = next(m for m in conv1.members if m.path == "params/Dense_0/kernel")
    assert rows.axis == 0 and rows.role == "in"
    counts = np.bincount(rows.index, minlength=50)
    assert (counts == rows.index.size // 50).all()  # each channel owns one block of rows
    roles = {m.path: m.role for m in conv1.members}
    assert roles["params/Conv_1/kernel"] == "out" and roles["params/Conv_1/bias"] == "other"
    # the input's channel and the classes are tied to the outside: in no group
    paths = {(m.path, m.axis) for g in groups for m in g.members}
    assert ("params/Conv_0/kernel", 2) not in paths and ("params/Dense_1/kernel", 1) not in paths


def test_resnet_residual_groups_span_stages_with_offsets():
    model, variables, shape = _model("resnet20")
    groups = jc.structured.groups(model.apply, variables, jnp.zeros((1, *shape)))
    assert len(groups) == 12  # 9 inside blocks + 3 along the residual stream
    stream = max(groups, key=lambda g: len(g.members))
    assert stream.size == 16
    bn = {m.path: m for m in stream.members if m.path.endswith("BatchNorm_1/scale")}
    assert len(bn) == 9  # every block writes the stream
    # option A pads 16 -> 32 channels with 8 zeros on each side: stage 2 holds it at 8..23
    stage2 = bn["params/BasicBlock_3/BatchNorm_1/scale"].index
    assert (stage2[8:24] == np.arange(16)).all() and (stage2[:8] == -1).all()


def test_nnx_model():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.out = nnx.Linear(8, 4, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.relu(self.bn(self.conv(x))).mean((1, 2)))

    net = Net(nnx.Rngs(0))
    net.eval()
    apply_fn, variables = jc.adapt.functional(net)
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 3))
    groups = jc.structured.groups(apply_fn, variables, x)
    assert [g.size for g in groups] == [8]
    assert {m.path for m in groups[0].members} >= {"params/conv/kernel", "batch_stats/bn/mean"}
    masks = jc.structured.masks(apply_fn, variables, x, ratio=0.5, groups=groups)
    _assert_equal_functions(apply_fn, variables, masks, x)


def test_reductions_over_channels_pin_them():
    class Norm(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.LayerNorm()(nn.Dense(6)(x))
            return nn.Dense(2)(nn.relu(nn.Dense(5)(h)))

    model = Norm()
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 3)))  # only shapes are used
    groups = jc.structured.groups(model.apply, v, jnp.ones((1, 3)))
    # the layer norm averages over Dense_0's features: removing one would change the others
    assert [g.size for g in groups] == [5]


def test_unknown_primitive_is_an_error_naming_it():
    class Gather(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.Dense(4)(x)
            return nn.Dense(2)(h[:, jnp.array([3, 1, 0, 2])])

    model = Gather()
    v = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 3)))
    with pytest.raises(UnsupportedPrimitiveError, match="gather"):
        jc.structured.groups(model.apply, v, jnp.ones((1, 3)))


def test_bad_inputs():
    model, variables, shape = _model("lenet5")
    x = jnp.zeros((1, *shape))
    for ratio in (-0.1, 1.0, "half"):
        with pytest.raises(ValueError, match="ratio"):
            jc.structured.masks(model.apply, variables, x, ratio=ratio)
    with pytest.raises(ValueError, match="criterion"):
        jc.structured.masks(model.apply, variables, x, ratio=0.5, criterion="l3")
    with pytest.raises(ValueError, match="batch norm"):
        jc.structured.masks(model.apply, variables, x, ratio=0.5, criterion="bn")
    with pytest.raises(ValueError, match="grads"):
        jc.structured.masks(model.apply, variables, x, ratio=0.5, criterion="taylor")
    with pytest.raises(ValueError, match=r"flops=0\.9999"):
        jc.structured.ratio_for_flops(model.apply, variables, x, flops=0.9999)
    with pytest.raises(ValueError, match="exactly one"):
        jc.structured.channels(model.apply, variables, x)
    with pytest.raises(TypeError, match="Masks"):
        jc.structured.apply_masks(variables, {"keep": 1})
    masks = jc.structured.masks(model.apply, variables, x, ratio=0.5)
    with pytest.raises(jc.errors.StructureMismatchError, match="traced from"):
        jc.structured.apply_masks({"other": jnp.ones(3)}, masks)
    kept = jc.structured.widths(masks)
    broken = dict(kept)
    broken[("params/Conv_0/bias", 0)] = np.ones(20, bool)  # the kernel loses them, the bias not
    with pytest.raises(WidthMismatchError, match="same channels"):
        jc.structured.run_small(model.apply, variables, broken)(variables, x)
    out = dict(kept)
    out[("params/Dense_1/kernel", 1)] = np.arange(10) > 0  # a class: tied to the output
    with pytest.raises(WidthMismatchError, match="output"):
        jc.structured.run_small(model.apply, variables, out)(variables, x)
    small_apply = jc.structured.shrink(model.apply, variables, masks)[0]
    with pytest.raises(WidthMismatchError, match="shape"):
        small_apply(variables, x)  # the dense variables given to the small model


def test_flops_budget_is_met_and_tight():
    model, variables, shape = _model("lenet5")
    x = jnp.zeros((1, *shape))
    ratio = jc.structured.ratio_for_flops(model.apply, variables, x, flops=0.5, tol=1e-2)
    dense = jc.analysis.flops(model.apply, variables, x)

    def flops_at(r):
        masks = jc.structured.masks(model.apply, variables, x, ratio=r)
        small_apply, small = jc.structured.shrink(model.apply, variables, masks)
        return jc.analysis.flops(small_apply, small, x)

    assert flops_at(ratio) <= 0.5 * dense < flops_at(ratio - 2e-2)


def test_transform_trains_masked_and_finalizes_to_the_smaller_model(tmp_path):
    model, variables, shape = _model("vgg_small")
    x = jax.random.normal(jax.random.key(3), (4, *shape))
    schedule = jc.schedules.linear(0.0, 0.5, begin=0, end=2)
    t = jc.structured.channels(model.apply, variables, x[:1], ratio=schedule)
    state = jc.train.TrainState.create(
        apply_fn=model.apply,
        variables=variables,
        tx=optax.sgd(0.1),
        key=jax.random.key(0),
        transform=t,
    )
    step = jc.train.make_train_step(donate=False)
    batch = (x, jnp.arange(4) % 10)
    kept = []
    for _ in range(3):
        state, _ = step(state, batch)
        kept.append([np.asarray(k) for k in state.comp_state.masks.keep])
    for before, after in itertools.pairwise(kept):  # nested: a removed channel stays removed
        for b, a in zip(before, after):
            assert not (a & ~b).any()
    masks = state.comp_state.masks
    assert [int(k.sum()) for k in masks.keep] == [g.size - g.size // 2 for g in masks.groups]
    # removed channels are exactly zero in every params member
    params = state.cparams
    zeroed = jc.structured.apply_masks(params, masks)
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b), params, zeroed)

    final = t.finalize(state.cparams, state.comp_state)
    jax.tree.map(
        np.testing.assert_array_equal, jc.to_dense(final), t.apply(params, state.comp_state)
    )
    variables_out = {"params": final, "batch_stats": state.model_state["batch_stats"]}
    path = os.path.join(tmp_path, "m.jcz")
    jc.encode.save(path, variables_out)
    loaded, _ = jc.encode.load(path)
    small_apply, small = jc.structured.small(model.apply, loaded, x[:1])
    masked = _run("vgg_small")(
        {"params": t.apply(state.cparams, state.comp_state), **state.model_state}, x
    )
    np.testing.assert_allclose(jax.jit(small_apply)(small, x), masked, rtol=1e-5, atol=1e-5)
    assert jc.core.nbytes(final) < 0.4 * jc.core.nbytes(variables["params"])


def test_sensitivity_scan_and_per_group_ratios():
    model, variables, shape = _model("lenet5")
    x = jax.random.normal(jax.random.key(4), (8, *shape))
    groups = jc.structured.groups(model.apply, variables, x[:1])
    run = _run("lenet5")
    dense = run(variables, x)
    evaluate = lambda v: -float(jnp.mean((run(v, x) - dense) ** 2))
    scan = jc.structured.sensitivity(evaluate, variables, groups, ratios=(0.25, 0.5))
    assert scan.baseline == 0.0 and len(scan.metrics) == 3
    # one entry recomputed by hand: group 1 alone at 0.5 by the L1 norm of its filters
    l1 = jnp.abs(variables["params"]["Conv_1"]["kernel"]).sum(axis=(0, 1, 2))
    keep = (jnp.ones(20, bool), jc.structured.keep_top(l1, 0.5), jnp.ones(500, bool))
    masked = jc.structured.apply_masks(variables, jc.structured.Masks(keep, groups))
    assert scan.metrics[1][1] == pytest.approx(evaluate(masked))
    drop = -min(min(row) for row in scan.metrics) / 2
    ratios = jc.structured.ratios_for_drop(scan, max_drop=drop)
    for row, r in zip(scan.metrics, ratios):  # the largest grid ratio within the drop
        within = [g for g, m in zip(scan.ratios, row) if -m <= drop]
        assert r == (max(within) if within and within[0] == 0.25 else 0.0)
    masks = jc.structured.masks(model.apply, variables, x, ratio=ratios, groups=groups)
    assert [int(np.sum(k)) for k in masks.keep] == [
        g.size - int(np.floor(r * g.size)) for g, r in zip(groups, ratios)
    ]
    with pytest.raises(ValueError, match="one per group"):
        jc.structured.masks(model.apply, variables, x, ratio=(0.5,), groups=groups)
    with pytest.raises(ValueError, match="increasing"):
        jc.structured.sensitivity(evaluate, variables, groups, ratios=(0.5, 0.25))


def test_round_to_keeps_multiples():
    model, variables, shape = _model("resnet20")
    x = jnp.zeros((1, *shape))
    groups = jc.structured.groups(model.apply, variables, x)
    masks = jc.structured.masks(model.apply, variables, x, ratio=0.3, round_to=8, groups=groups)
    for keep, g in zip(masks.keep, groups):  # 16 -> 8, 32 -> 16, 64 -> 40
        n = g.size - int(0.3 * g.size)
        assert int(np.sum(keep)) == max(8, n // 8 * 8)
    with pytest.raises(ValueError, match="round_to"):
        jc.structured.masks(model.apply, variables, x, ratio=0.3, round_to=0, groups=groups)
    with pytest.raises(ValueError, match="round_to needs"):
        jc.structured.masks(
            model.apply, variables, x, ratio=0.3, round_to=8, scope="global", groups=groups
        )
