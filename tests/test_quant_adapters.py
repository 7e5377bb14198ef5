"""jaxcomp.quant apply adapters: activation quantization, calibration, int8 inference, QAT with
integer matmuls, XNOR and BinaryNet inputs; the experiment and benchmark smokes."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc
from jaxcomp import quant
from jaxcomp.errors import SelectionError
from jaxcomp.quant._intops import int_linear
from jaxcomp.quant._intops import quantize_kernel
from jaxcomp.quant._layers import _int_conv


class ConvNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.relu(nn.Conv(4, (3, 3))(x))  # SAME padding: the zero-point term needs the window
        x = nn.relu(nn.Conv(6, (3, 3), padding="VALID")(x))
        x = x.reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


def _numpy_params(model, x, seed=0):
    """Params of ``model`` drawn with numpy at flax's default scales (1/sqrt(fan-in) kernels),
    without compiling flax's initializers (seconds per small conv kernel shape on a CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
    rng = np.random.default_rng(seed)
    fill = lambda s: jnp.asarray(rng.normal(size=s.shape) / np.sqrt(np.prod(s.shape[:-1])), s.dtype)
    return jax.tree.map(fill, shapes)


@pytest.fixture(scope="module")
def net():
    m = ConvNet()
    x = jax.random.uniform(jax.random.key(1), (4, 7, 7, 2))
    # nonzero biases (numpy draws every leaf): with zero biases an integer accumulation can be
    # exactly 0 where the float one is 1e-9, and ReLU's derivative at 0 would make the two
    # backward passes differ
    return m, {"params": _numpy_params(m, x)}, x


def _rules(bits=8):
    return [(".*", bits)]


@pytest.fixture(scope="module")
def wq(net):
    """8-bit per-channel fake quantization of the net's params and its finalized nodes (shared:
    finalizing runs a few small programs per kernel)."""
    t, c, s = _wq(net[1]["params"])
    return t, c, s, jax.jit(t.finalize)(c, s), jax.jit(t.apply)(c, s)


def _wq(params, bits=8):
    t = quant.fake_quant(bits=bits, per_channel=True)
    c, s = t.init(params)
    return t, c, s


def test_activations_quantize_layer_inputs_with_ste():
    m = nn.Dense(2)
    v = {"params": {"kernel": jnp.array([[0.5, -1.0], [0.25, 2.0], [-0.75, 1.5]]),
                    "bias": jnp.array([0.1, -0.2])}}  # fmt: skip
    x = jnp.array([[0.0, 0.4, 1.0], [0.2, 0.9, 0.55]])
    q = quant.activations(m.apply, [("", 2)])
    scale, zp = quant.qparams_from_range(0.0, 1.0, bits=2, symmetric=False)
    xq = quant.fake_quantize(x, scale, zp, bits=2, symmetric=False)
    np.testing.assert_allclose(jax.jit(q)(v, x), m.apply(v, xq), rtol=1e-6)
    g = jax.jit(jax.grad(lambda x: jnp.sum(q(v, x))))(x)  # STE: the input gradient is the float one
    np.testing.assert_allclose(g, jnp.sum(v["params"]["kernel"], axis=1)[None].repeat(2, 0),
                               rtol=1e-6)  # fmt: skip


def test_rules_select_layers_and_bad_rules(net):
    m, v, x = net
    seen = []
    q = quant.activations(m.apply, [("Dense_1", None), ("Dense", lambda x: seen.append(1) or x)])
    np.testing.assert_allclose(jax.jit(q)(v, x), jax.jit(m.apply)(v, x), rtol=1e-6)
    assert len(seen) == 1  # only Dense_0: Dense_1 is exempt, the convs match no rule
    with pytest.raises(SelectionError, match="Dense_7"):  # found while tracing
        jax.eval_shape(quant.activations(m.apply, [("Dense_7", 8)]), v, x)
    for bad in ([("Dense", 17)], [("Dense", 0)], [("Dense", "ternary")], [("(", 8)], []):
        with pytest.raises(ValueError):
            quant.activations(m.apply, bad)
    with pytest.raises(ValueError, match=r"\[2, 8\]"):
        quant.activations(m.apply, [("Dense", 16)], int_matmul=True)


def test_calibration_collection_and_static_ranges(net):
    m, v, x = net
    q = quant.activations(m.apply, _rules(4), observer=quant.minmax())
    cal = quant.calibrate(q, v, [x, 2 * x], train=False)
    stats = cal[quant.STATS]
    assert set(stats) == {"Conv_0", "Conv_1", "Dense_0", "Dense_1"}
    s = stats["Conv_0"]["input"]
    assert int(s.count) == 2
    np.testing.assert_allclose(s.hi, 2 * jnp.max(x), rtol=1e-6)
    # calibrated: a batch beyond the range is clipped (gradient 0 there); dynamic: it is not
    big = 5 * x
    out, g = jax.jit(jax.value_and_grad(lambda x: jnp.sum(q(cal, x) ** 2)))(big)
    assert float(jnp.mean(g == 0)) > 0.3
    assert not bool(jnp.allclose(out, jnp.sum(jax.jit(q)(v, big) ** 2)))
    _, new = jax.jit(lambda v, x: q(v, x, mutable=[quant.STATS]))(cal, x)
    assert int(new[quant.STATS]["Dense_0"]["input"].count) == 3


def test_stats_update_in_training_steps(net):
    m, v, x = net
    q = quant.activations(m.apply, _rules(8))
    cal = quant.calibrate(q, v, [x])
    state = jc.train.TrainState.create(
        apply_fn=q, variables=cal, tx=optax.adam(1e-3), key=jax.random.key(0),
        transform=quant.fake_quant(),
    )  # fmt: skip
    step = jc.train.make_train_step(donate=False)
    y = jnp.array([0, 1, 2, 0])
    new, metrics = step(state, (x * 3, y))
    before = cal[quant.STATS]["Conv_0"]["input"]
    after = new.model_state[quant.STATS]["Conv_0"]["input"]
    assert int(after.count) == 2 and float(after.hi) > float(before.hi)  # moving average moved
    assert np.isfinite(float(metrics["loss"]))


def _int32_contractions(jaxpr):
    """``(primitive, operand dtypes)`` of every dot/conv accumulating in int32, nested included."""
    out = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in ("dot_general", "conv_general_dilated"):
            if eqn.params.get("preferred_element_type") == jnp.int32:
                out.append((eqn.primitive.name, [str(v.aval.dtype) for v in eqn.invars]))
        for p in eqn.params.values():
            for sub in p if isinstance(p, tuple | list) else (p,):
                if hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    out += _int32_contractions(sub.jaxpr)
                elif hasattr(sub, "eqns"):
                    out += _int32_contractions(sub)
    return out


def test_run_int8_matches_the_fake_quant_forward(net, wq):
    m, _, x = net
    _, _, _, fin, deq = wq
    run = jax.jit(quant.run_int8(m.apply))
    fq = jax.jit(quant.activations(m.apply, _rules(8), symmetric=True))
    ref = fq({"params": deq}, x)
    out = run({"params": fin}, x)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    # so far within one quantization step of the output
    assert float(jnp.max(jnp.abs(out - ref))) < 0.01 * float(jnp.max(jnp.abs(ref))) / 127
    # affine inputs and calibrated ranges agree with the fake-quant forward too
    qa = quant.activations(m.apply, _rules(8), symmetric=False)
    cal = quant.calibrate(qa, {"params": deq}, [x])
    ref = jax.jit(qa)(cal, x)
    run = jax.jit(quant.run_int8(m.apply, symmetric=False))
    out = run({"params": fin, quant.STATS: cal[quant.STATS]}, x)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_run_int8_uses_integer_kernels(net, wq):
    m, _, x = net
    jaxpr = jax.make_jaxpr(quant.run_int8(m.apply, path="int8"))({"params": wq[3]}, x)
    ops = _int32_contractions(jaxpr.jaxpr)
    # the convolutions run as integer matmuls over strided-slice patches (_int_conv)
    assert [name for name, _ in ops] == ["dot_general"] * 4
    assert all(dtypes == ["int8", "int8"] for _, dtypes in ops)


def test_run_int8_bad_kernels(net):
    m, v, x = net
    # the nodes' shapes and static fields are what run_int8 checks: traced, nothing compiled
    final = lambda t: jax.eval_shape(lambda p: {"params": t.finalize(*t.init(p))}, v["params"])
    t = quant.fake_quant(bits=8, symmetric=False)
    with pytest.raises(ValueError, match="symmetric"):
        jax.eval_shape(quant.run_int8(m.apply), final(t), x)
    t = quant.fake_quant(bits=12)
    with pytest.raises(ValueError, match="<= 8"):
        jax.eval_shape(quant.run_int8(m.apply), final(t), x)
    t = quant.kmeans(clusters=2, keep_zeros=False)
    with pytest.raises(ValueError, match="to_dense"):
        jax.eval_shape(quant.run_int8(m.apply), final(t), x)
    with pytest.raises(ValueError, match="bits"):
        quant.run_int8(m.apply, bits=9)


@pytest.mark.parametrize("symmetric", [True, False])
def test_int_matmul_qat_equals_fake_quant_forward_and_gradient(net, wq, symmetric):
    m, _, x = net
    t, c, s = wq[:3]
    fake = quant.activations(m.apply, _rules(8), symmetric=symmetric)
    intm = quant.activations(m.apply, _rules(8), symmetric=symmetric, int_matmul=True,
                             path="int8")  # fmt: skip
    y = jnp.array([0, 1, 2, 0])

    def loss(apply):
        return lambda c: optax.softmax_cross_entropy_with_integer_labels(
            apply({"params": t.apply(c, s)}, x), y
        ).mean()

    lf, gf = jax.jit(jax.value_and_grad(loss(fake)))(c)
    li, gi = jax.jit(jax.value_and_grad(loss(intm)))(c)
    np.testing.assert_allclose(li, lf, rtol=1e-5)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), gi, gf)
    ops = _int32_contractions(jax.make_jaxpr(loss(intm))(c).jaxpr)
    # 4 layers, one integer call each: the zero-point term is one more example of the batch
    assert len(ops) == 4
    assert all(dtypes == ["int8", "int8"] for _, dtypes in ops)


@settings(max_examples=12, deadline=None)  # each example compiles two convolutions: 12 a run
@given(
    rank=st.sampled_from([1, 2]),
    window=st.integers(1, 3),
    stride=st.integers(1, 2),
    dilation=st.integers(1, 2),
    padding=st.sampled_from(["SAME", "VALID", "pairs"]),
    seed=st.integers(0, 2**16),
)
def test_int_conv_by_slices_equals_the_integer_convolution(
    rank, window, stride, dilation, padding, seed
):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.integers(-128, 128, (2, *(7,) * rank, 3)), jnp.int8)
    w = jnp.asarray(rng.integers(-127, 128, (*(window,) * rank, 3, 4)), jnp.int8)
    pad = [(1, -1)] * rank if padding == "pairs" and rank == 1 else [(2, 0)] * rank
    pad = padding if padding != "pairs" else pad
    strides, dil = (stride,) * rank, (dilation,) * rank
    pad = pad if isinstance(pad, str) else tuple(pad)  # static: one program per example
    got = jax.jit(_int_conv, static_argnums=(2, 3, 4, 5))(x, w, strides, pad, dil, jnp.int32)
    spec = ("NWC", "WIO", "NWC") if rank == 1 else ("NHWC", "HWIO", "NHWC")
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, spec)
    ref = jax.lax.conv_general_dilated(x, w, strides, pad, rhs_dilation=dil, dimension_numbers=dn,
                                       preferred_element_type=jnp.int32)  # fmt: skip
    assert got.dtype == jnp.int32
    np.testing.assert_array_equal(got, ref)


@pytest.mark.parametrize(
    "layer,shape",
    [
        (nn.Dense(5), (6,)),  # no batch axis: the zero-point term as its own contraction
        (nn.Dense(5), (3, 6)),
        (nn.Dense(5), (2, 3, 6)),  # two batch axes
        (nn.Conv(4, (3, 3)), (5, 5, 2)),  # unbatched SAME conv: the term depends on the window
        (nn.Conv(4, (3, 3)), (2, 3, 5, 5, 2)),  # two batch axes
    ],
)
def test_int_linear_zero_point_term_for_any_batch_layout(layer, shape):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=shape), jnp.float32)
    shapes = jax.eval_shape(layer.init, jax.random.key(1), x)
    v = jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape) / 3, a.dtype), shapes)
    op = quant.contraction(layer.bind(v))

    @jax.jit  # one program per layout
    def got_and_ref(x, kernel):
        sx, zx = jnp.float32(1.0 / 200), jnp.float32(-100.0)  # affine: [0, 1] in [-100, 100]
        xq = jnp.round(x / sx + zx).astype(jnp.int8)
        wq, sw = quantize_kernel(kernel, 8)
        got = int_linear(op, xq, wq, sx, zx, sw, symmetric=False)
        x_hat = (xq.astype(jnp.float32) - zx) * sx
        ref = op(x_hat, wq.astype(jnp.float32) * sw.reshape((1,) * (wq.ndim - 1) + (-1,)))
        return got, ref

    got, ref = got_and_ref(x, v["params"]["kernel"])
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_xnor_and_binarynet_inputs():
    rng = np.random.default_rng(0)
    f32 = lambda *shape: rng.normal(size=shape).astype(np.float32)
    m = nn.Dense(3)
    k, b, x = f32(5, 3), f32(3), f32(4, 5)
    v = {"params": {"kernel": jnp.asarray(k), "bias": jnp.asarray(b)}}
    out = jax.jit(quant.activations(m.apply, [("", "xnor")]))(v, x)
    beta = np.mean(np.abs(x), axis=1, keepdims=True)
    np.testing.assert_allclose(out, (np.sign(x) @ k) * beta + b[None, :], rtol=1e-5, atol=1e-6)
    out = jax.jit(quant.activations(m.apply, [("", 1)]))(v, x)
    np.testing.assert_allclose(out, np.sign(x) @ k + b[None, :], rtol=1e-5, atol=1e-6)
    conv = nn.Conv(2, (3, 3), padding="VALID")
    kc, bc, xi = f32(3, 3, 4, 2), f32(2), f32(1, 5, 5, 4)
    vc = {"params": {"kernel": jnp.asarray(kc), "bias": jnp.asarray(bc)}}
    out = jax.jit(quant.activations(conv.apply, [("", "xnor")]))(vc, xi)
    windows = lambda a: np.lib.stride_tricks.sliding_window_view(a, (3, 3), axis=(1, 2))
    a = np.mean(np.abs(xi), axis=-1)  # XNOR-Net's A, then K = A * box filter
    kmap = windows(a).sum(axis=(-2, -1)) / 9
    ref = np.einsum("nhwcij,ijco->nhwo", windows(np.sign(xi)), kc)  # the VALID conv of sign(x)
    np.testing.assert_allclose(out, ref * kmap[..., None] + bc, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_benchmark_smokes(capsys, jit_cache):
    from experiments.benchmarks import int8_inference
    from experiments.benchmarks import qat_overhead

    qat = qat_overhead.main(["--smoke", "--pipeline", "2"])
    assert set(qat["mlp"]) == {"fp32", "w8a8_fake", "w8a8_int", "w8a8_int_adapter_only",
                               "w8a8_int_adapter_only_latent"}  # fmt: skip
    assert "isa" in qat["machine"] and set(qat["paths"].values()) <= {"int8", "f32"}
    assert qat["pipeline"] == 2
    assert all(r["ratio"] > 0 for r in qat["mlp"].values())
    inf = int8_inference.main(["--smoke"])
    with pytest.raises(SystemExit):
        int8_inference.main(["--smoke", "--batch", "0"])
    assert inf["mlp"]["int8_dynamic"]["ratio"] > 0
    assert {"int8_dynamic_path_int8", "int8_dynamic_path_f32"} <= set(inf["mlp"])
    assert 3.0 < inf["mlp"]["weight_bytes"]["ratio"] <= 4.0
    assert '"ratio"' in capsys.readouterr().out


@pytest.mark.slow
def test_experiment_smoke(tmp_path, jit_cache):
    from experiments.quantization import bits_sweep

    res = bits_sweep.main(["--smoke", "--out", str(tmp_path)])
    assert (tmp_path / "bits_sweep.md").exists() and (tmp_path / "quantization_bits.png").exists()
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in res["rows"])
