"""Every apply adapter on a Flax NNX model equals the same adapter on its linen twin.

LeNet-5 from ``jc.models.get("lenet5", api="nnx")`` has the params paths of the linen model, so
one set of weights runs through both; each adapter's NNX output must equal the linen output.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import nnx

import jaxcomp as jc
from jaxcomp import lowrank
from jaxcomp import prune
from jaxcomp import quant

RTOL = 1e-5
SHAPE = (16, 16, 1)  # LeNet-5's smallest input: Dense_0 sees 1x1x50


@pytest.fixture(scope="module")
def lenet():
    """``(linen apply, NNXApply, variables, x)`` with one set of weights for both."""
    # built abstractly, weights drawn by numpy at 1/sqrt(fan-in) (no initializer compiled), with
    # nonzero biases, so that a dropped or doubled bias shows
    model = nnx.eval_shape(
        lambda: jc.models.get("lenet5", api="nnx", key=jax.random.key(0), input_shape=SHAPE)
    )
    nnx_apply, shapes = jc.adapt.functional(model)
    rng = np.random.default_rng(0)
    draw = lambda a: rng.normal(size=a.shape) / np.sqrt(np.prod(a.shape[:-1]) if a.ndim > 1 else 10)
    fill = lambda a: jnp.asarray(draw(a), a.dtype)
    variables = {"params": jax.tree.map(fill, shapes["params"])}
    x = jnp.asarray(rng.uniform(size=(3, *SHAPE)), jnp.float32)
    linen = jc.models.get("lenet5")
    return linen.apply, nnx_apply, variables, x


def _close(a, b, rtol=RTOL, atol=1e-6):
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b)


def test_the_twins_agree_without_adapters(lenet):
    linen_apply, nnx_apply, v, x = lenet
    _close(nnx_apply(v, x), linen_apply(v, x))


def test_handlers_see_the_same_layers(lenet):
    linen_apply, nnx_apply, v, x = lenet

    def record(seen):
        def handler(layer):
            c = layer.config
            cfg = None if c is None else c._replace(dtype=None)
            seen.append((layer.path, cfg, jax.tree.map(jnp.shape, layer.params),
                         jax.tree.map(jnp.shape, layer.args)))  # fmt: skip
            return jc.adapt.PASS

        return handler

    seen_l, seen_n = [], []
    jc.adapt.intercept(linen_apply, record(seen_l))(v, x)
    jc.adapt.intercept(nnx_apply, record(seen_n))(v, x)
    assert [s[0] for s in seen_n] == ["", "Conv_0", "Conv_1", "Dense_0", "Dense_1"]
    assert seen_n == seen_l
    conv = dict((s[0], s[1]) for s in seen_n)["Conv_1"]
    assert (conv.kind, conv.features, conv.kernel_size) == ("conv", 50, (5, 5))
    assert conv.padding == "VALID"


@pytest.mark.parametrize("name", ["lenet300", "vgg_small", "resnet20"])
def test_every_model_shows_handlers_the_same_layers(name):
    # shapes only (nnx.eval_shape, jax.eval_shape): the model is built abstractly and the
    # handlers run while tracing; no initializer or layer is computed
    model = nnx.eval_shape(lambda: jc.models.get(name, api="nnx", key=jax.random.key(0)))
    nnx_apply, v = jc.adapt.functional(model)
    x = jnp.zeros((2, *jc.models.input_shape(name)))

    def record(seen):
        def handler(layer):
            c = layer.config
            seen.append((layer.path, c, jax.tree.map(jnp.shape, layer.params)))
            return jc.adapt.PASS

        return handler

    seen_l, seen_n = [], []
    jax.eval_shape(jc.adapt.intercept(jc.models.get(name).apply, record(seen_l)), v, x)
    jax.eval_shape(jc.adapt.intercept(nnx_apply, record(seen_n)), v, x)
    assert len(seen_n) > 3 and seen_n == seen_l


def test_a_handler_replaces_and_reruns_a_layer(lenet):
    linen_apply, nnx_apply, v, x = lenet

    def doubled(layer):  # the layer's own code with a rebuilt kernel (the adapters' fallback)
        if layer.path != "Dense_0":
            return jc.adapt.PASS
        return layer.run({**layer.params, "kernel": 2 * layer.params["kernel"]}, *layer.args)

    want = jc.adapt.intercept(linen_apply, doubled)(v, x)
    got = jax.jit(jc.adapt.intercept(nnx_apply, doubled))(v, x)
    _close(got, want)
    assert not np.allclose(got, linen_apply(v, x), rtol=1e-3)
    # the interception lives on the call's own copy: the classes are untouched afterwards
    assert nnx.Linear.__call__.__qualname__ == "Linear.__call__"
    assert type(nnx_apply.merge(v).Dense_0) is nnx.Linear


def test_run_factorized(lenet):
    linen_apply, nnx_apply, v, x = lenet
    t = jc.chain(
        lowrank.svd(rank=4, where=jc.select.by_regex("Dense_.*/kernel")),
        lowrank.tucker2(rank=(4, 6), where=jc.select.by_regex("Conv_1/kernel")),
    )
    final = {"params": t.finalize(*t.init(v["params"]))}
    assert not isinstance(final["params"]["Dense_0"]["kernel"], jax.Array)
    want = jc.adapt.run_factorized(linen_apply)(final, x)
    _close(jax.jit(jc.adapt.run_factorized(nnx_apply))(final, x), want)
    _close(want, linen_apply({"params": t.apply(*t.init(v["params"]))}, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("int_matmul", [False, True])
def test_activations_and_calibration(lenet, int_matmul):
    linen_apply, nnx_apply, v, x = lenet
    rules = [("Conv_1", 4), ("Dense_.*", 8)]
    ql = quant.activations(linen_apply, rules, int_matmul=int_matmul)
    qn = quant.activations(nnx_apply, rules, int_matmul=int_matmul)
    _close(jax.jit(qn)(v, x), jax.jit(ql)(v, x))
    # calibration: the observers' statistics are a "quant_stats" collection for both
    cl, cn = quant.calibrate(ql, v, [x, 2 * x]), quant.calibrate(qn, v, [x, 2 * x])
    assert set(cn["quant_stats"]) == {"Conv_1", "Dense_0", "Dense_1"}
    _close(cn["quant_stats"], cl["quant_stats"])
    _close(jax.jit(qn)(cn, 0.5 * x), jax.jit(ql)(cl, 0.5 * x))
    # the gradient, through the straight-through estimator (and the int8 forward); jitted: one
    # program each instead of every primitive of the backward pass compiled on its own
    loss = lambda q: lambda p: jnp.sum(q({**cn, "params": p}, x) ** 2)
    grad = lambda q: jax.jit(jax.grad(loss(q)))(v["params"])
    _close(grad(qn), grad(ql), rtol=1e-5, atol=1e-6)


def test_run_int8(lenet):
    linen_apply, nnx_apply, v, x = lenet
    t = quant.fake_quant(bits=8, per_channel=True)
    final = {"params": jax.jit(t.finalize)(*t.init(v["params"]))}
    assert final["params"]["Conv_0"]["kernel"].codes.dtype == jnp.int8
    run = lambda apply_fn: jax.jit(quant.run_int8(apply_fn))(final, x)
    _close(run(nnx_apply), run(linen_apply))


def test_capture_inputs_outputs_and_rows(lenet):
    linen_apply, nnx_apply, v, x = lenet
    kw = dict(inputs=["Conv_1", "Dense_1"], outputs=["Conv_1", "Dense_0"])
    for rows in (False, True):
        yl, cl = jc.adapt.capture(linen_apply, rows=rows, **kw)(v, x)
        yn, cn = jax.jit(jc.adapt.capture(nnx_apply, rows=rows, **kw))(v, x)
        _close((yn, cn), (yl, cl))
    # rows: the im2col patches that Conv_1's reshaped kernel multiplies
    p = v["params"]["Conv_1"]
    assert cn.inputs["Conv_1"].shape == (3 * 2 * 2, 5 * 5 * 20)  # 2x2 outputs per example
    _close(cn.inputs["Conv_1"] @ p["kernel"].reshape(-1, 50) + p["bias"][None, :],
           cn.outputs["Conv_1"].reshape(-1, 50), rtol=1e-4, atol=1e-5)  # fmt: skip
    with pytest.raises(ValueError, match=r"Dense_7.*Conv_0.*Dense_1"):
        jc.adapt.capture(nnx_apply, outputs="Dense_7")(v, x)


def test_obs_hessians_and_pruning(lenet):
    linen_apply, nnx_apply, v, x = lenet
    x = jnp.concatenate([x, x[:1]])  # two batches of the same shape: one program each
    hl = prune.layer_hessians(linen_apply, v, x, batch_size=2)
    hn = prune.layer_hessians(nnx_apply, v, x, batch_size=2)
    assert set(hn) == {"Conv_0/kernel", "Conv_1/kernel", "Dense_0/kernel", "Dense_1/kernel"}
    _close(hn, hl, rtol=1e-5)
    rl = prune.obs_prune(v["params"], hl, sparsity=0.5, where=jc.select.by_regex("Dense_1/kernel"))
    rn = prune.obs_prune(v["params"], hn, sparsity=0.5, where=jc.select.by_regex("Dense_1/kernel"))
    _close(rn.params, rl.params, rtol=1e-5, atol=1e-6)


def test_qcnn_error_correction(lenet):
    linen_apply, nnx_apply, v, x = lenet
    got = {}
    for name, fn in (("linen", linen_apply), ("nnx", nnx_apply)):
        _, c = jc.adapt.capture(fn, inputs=re.compile("Dense_1"), rows=True)(v, x)
        inputs = {f"{p}/kernel": r for p, r in c.inputs.items()}
        t = quant.product_quant(subvector=4, clusters=4, key=jax.random.key(3), inputs=inputs,
                                where=jc.select.by_regex("Dense_1/kernel"))  # fmt: skip
        got[name] = t.apply(*t.init(v["params"]))["Dense_1"]["kernel"]
    _close(got["nnx"], got["linen"], rtol=1e-5, atol=1e-6)


class _BNNet(nnx.Module):
    def __init__(self, rngs):
        self.Dense_0 = nnx.Linear(4, 5, rngs=rngs)
        self.BatchNorm_0 = nnx.BatchNorm(5, rngs=rngs)
        self.Dense_1 = nnx.Linear(5, 3, rngs=rngs)

    def __call__(self, x):
        return self.Dense_1(nnx.relu(self.BatchNorm_0(self.Dense_0(x))))


class _LinenBNNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.BatchNorm(use_running_average=not train, momentum=0.99, epsilon=1e-5)(nn.Dense(5)(x))
        return nn.Dense(3)(nn.relu(x))


def test_model_collections_and_adapter_collections_together():
    nnx_apply, v = jc.adapt.functional(_BNNet(nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (6, 4))
    q = quant.activations(nnx_apply, [("Dense_1", 8)])
    y, cols = q(v, x, train=True, mutable=["batch_stats", "quant_stats"])
    _, bn = nnx_apply(v, x, train=True, mutable=["batch_stats"])
    _close(cols["batch_stats"], bn["batch_stats"])
    assert set(cols["quant_stats"]) == {"Dense_1"}
    ql = quant.activations(_LinenBNNet().apply, [("Dense_1", 8)])
    yl, cl = ql(v, x, train=True, mutable=["batch_stats", "quant_stats"])
    _close((y, cols), (yl, cl))
    with pytest.raises(ValueError, match="quant_stats"):  # written only when asked for
        jc.adapt.intercept(
            nnx_apply, lambda layer: layer.put_variable("quant_stats", "input", 1.0)
        )(v, x)


class _DropNet(nnx.Module):
    def __init__(self, rngs):
        self.Dense_0 = nnx.Linear(4, 8, rngs=rngs)
        self.Dropout_0 = nnx.Dropout(0.5, rngs=rngs)
        self.Dense_1 = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        return self.Dense_1(self.Dropout_0(self.Dense_0(x)))


def test_train_rngs_and_mutable_pass_through_to_the_module():
    nnx_apply, v = jc.adapt.functional(_DropNet(nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (5, 4))
    kw = dict(train=True, rngs={"dropout": jax.random.key(2)}, mutable=["rng_state"])
    want, st = nnx_apply(v, x, **kw)
    (got, st2), c = jc.adapt.capture(nnx_apply, inputs="Dense_1")(v, x, **kw)
    as_data = lambda t: jax.tree.map(
        lambda a: jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key) else a, t
    )
    _close((got, as_data(st2)), (want, as_data(st)))
    assert float(jnp.mean(c.inputs["Dense_1"] == 0)) > 0.2  # dropout ran, with the given key
    y, _ = jc.adapt.capture(nnx_apply, outputs="Dense_1")(v, x, train=False)
    _close(y, nnx_apply(v, x, train=False))


def test_functional_apply_never_writes_into_the_callers_numpy_variables():
    # NNX updates batch statistics in place when a variable holds a numpy array: the caller's
    # variables must come back unchanged from a train-mode call
    model = jc.models.get("vgg_small", api="nnx", key=jax.random.key(0), input_shape=(4, 4, 1),
                          widths=(2,), convs_per_stage=1, hidden=3)  # fmt: skip
    apply, variables = jc.adapt.functional(model)
    rng = np.random.default_rng(0)
    mine = jax.tree.map(lambda a: rng.uniform(0.5, 1.5, a.shape).astype(np.float32), variables)
    before = jax.tree.map(np.copy, mine)
    x = rng.standard_normal((2, 4, 4, 1)).astype(np.float32)
    _, stats = apply(mine, x, train=True, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, mine, before)
    assert not np.allclose(
        stats["batch_stats"]["BatchNorm_0"]["mean"], mine["batch_stats"]["BatchNorm_0"]["mean"]
    )
