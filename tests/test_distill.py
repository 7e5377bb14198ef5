"""Distillation losses, the teacher-student objective, MUNGE and SGLD."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import jaxcomp as jc
from jaxcomp import distill

SETTINGS = settings(max_examples=15, deadline=None)


def _logits(seed, shape=(3, 5), scale=3.0):
    return scale * jax.random.normal(jax.random.key(seed), shape)


# --- Hinton et al.: KD loss ----------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**16), t=st.floats(0.5, 20.0))
def test_kd_loss_is_zero_when_student_equals_teacher(seed, t):
    z = _logits(seed)
    assert abs(float(distill.kd_loss(z, z, temperature=t))) < 1e-5
    # and positive otherwise (KL > 0 for distinct distributions)
    assert float(distill.kd_loss(z, _logits(seed + 1), temperature=t)) > 0


@jax.jit
def _kd_grads(s, tt, t):
    g = jax.grad(lambda s: distill.kd_loss(s, tt, temperature=t))(s)
    gt = jax.grad(lambda tt: distill.kd_loss(s, tt, temperature=t))(tt)
    return g, gt


@SETTINGS
@given(seed=st.integers(0, 2**16), t=st.floats(0.5, 20.0), batch=st.sampled_from([1, 4]))
def test_kd_soft_gradient_is_T_times_softmax_difference(seed, t, batch):
    s, tt = _logits(seed, (batch, 6)), _logits(seed + 7, (batch, 6))
    g, gt = _kd_grads(s, tt, t)
    expected = t * (jax.nn.softmax(s / t) - jax.nn.softmax(tt / t)) / batch  # batch mean
    np.testing.assert_allclose(g, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(gt, 0.0)  # the teacher gets no gradient


def test_kd_alpha_mixes_soft_and_hard_parts():
    s, t = _logits(0), _logits(1)
    y = jnp.array([0, 3, 4])
    ce = optax.softmax_cross_entropy_with_integer_labels(s, y).mean()
    soft = distill.kd_loss(s, t, temperature=3.0)
    np.testing.assert_allclose(
        distill.kd_loss(s, t, temperature=3.0, labels=y, alpha=0.0), ce, rtol=1e-6
    )
    np.testing.assert_allclose(
        distill.kd_loss(s, t, temperature=3.0, labels=y, alpha=0.25),
        0.25 * soft + 0.75 * ce,
        rtol=1e-6,
    )


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf")])
def test_kd_rejects_bad_temperature(t):
    z = _logits(0)
    with pytest.raises(ValueError, match="temperature"):
        distill.kd_loss(z, z, temperature=t)
    with pytest.raises(ValueError, match="temperature"):
        distill.kd_term(temperature=t)
    with pytest.raises(ValueError, match="temperature"):
        distill.soft_targets(z, temperature=t)


def test_kd_and_mimic_reject_mismatched_shapes_and_missing_labels():
    with pytest.raises(ValueError, match="same shape"):
        distill.kd_loss(_logits(0, (3, 5)), _logits(0, (3, 4)), temperature=2.0)
    with pytest.raises(ValueError, match="same shape"):
        distill.mimic_loss(_logits(0, (3, 5)), _logits(0, (2, 5)))
    with pytest.raises(ValueError, match="labels"):
        distill.kd_loss(_logits(0), _logits(1), temperature=2.0, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        distill.kd_loss(_logits(0), _logits(1), temperature=2.0, alpha=1.5)
    with pytest.raises(ValueError, match="alpha"):
        distill.kd_term(alpha=-0.1)


def test_kd_accepts_a_traced_temperature():
    s, t = _logits(0), _logits(1)
    f = jax.jit(lambda temp: distill.kd_loss(s, t, temperature=temp))
    np.testing.assert_allclose(f(2.0), distill.kd_loss(s, t, temperature=2.0), rtol=1e-6)


# --- Ba and Caruana: mimic --------------------------------------------------------------------


def test_mimic_is_half_squared_error_with_gradient_s_minus_t():
    s, t = _logits(0), _logits(1)
    assert float(distill.mimic_loss(t, t)) == 0.0
    np.testing.assert_allclose(
        distill.mimic_loss(s, t), 0.5 * np.mean(np.sum((s - t) ** 2, -1)), rtol=1e-6
    )
    g = jax.grad(distill.mimic_loss)(s, t)
    np.testing.assert_allclose(g, (s - t) / s.shape[0], rtol=1e-5)


# --- FitNets: hints and regressors ------------------------------------------------------------


def test_dense_and_conv_regressors_map_to_the_hint_shape():
    k = jax.random.key(0)

    def shapes(student, teacher):  # shapes only: nothing to compile
        reg = jax.eval_shape(lambda: distill.regressor(k, student, teacher))
        out = jax.eval_shape(distill.regressor_apply, reg, jax.ShapeDtypeStruct(student, "f4"))
        return reg["kernel"].shape, out.shape

    assert shapes((2, 4, 4, 3), (2, 7)) == ((48, 7), (2, 7))
    assert shapes((2, 8, 8, 3), (2, 6, 6, 5)) == ((3, 3, 3, 5), (2, 6, 6, 5))  # k = 8 - 6 + 1
    assert shapes((2, 6, 6, 3), (2, 6, 6, 5)) == ((1, 1, 3, 5), (2, 6, 6, 5))
    with pytest.raises(ValueError, match="smaller"):
        distill.regressor(k, (2, 4, 4, 3), (2, 6, 6, 5))
    with pytest.raises(ValueError, match="cannot map"):
        distill.regressor(k, (2, 7), (2, 6, 6, 5))


def test_hint_loss_is_zero_for_an_exact_regressor_and_checks_shapes():
    s = jax.random.normal(jax.random.key(0), (4, 5, 5, 3))
    reg = distill.regressor(jax.random.key(1), s.shape, (4, 5, 5, 2))
    target = distill.regressor_apply(reg, s)
    assert float(distill.hint_loss(s, target, reg)) < 1e-10
    t2 = target + 1.0
    np.testing.assert_allclose(distill.hint_loss(s, t2, reg), 0.5, rtol=1e-5)
    with pytest.raises(ValueError, match="hint"):
        distill.hint_loss(s, jnp.ones((4, 2)))


def test_add_and_strip_regressors():
    p = {"Dense_0": {"kernel": jnp.ones((2, 2))}}
    q = distill.add_regressors(p, {"hint": {"kernel": jnp.ones((2, 3))}})
    assert set(q) == {"Dense_0", distill.REGRESSORS} and set(p) == {"Dense_0"}
    assert distill.strip_regressors(q) == p
    with pytest.raises(ValueError, match="already"):
        distill.add_regressors(q, {})


# --- attention transfer -----------------------------------------------------------------------


@SETTINGS
@given(seed=st.integers(0, 2**16), c=st.floats(0.1, 10.0))
def test_attention_maps_are_unit_norm_and_scale_invariant(seed, c):
    a = np.asarray(jax.random.normal(jax.random.key(seed), (2, 4, 5, 3)))
    q, q_scaled = _maps(a, c)
    assert q.shape == (2, 20)
    np.testing.assert_allclose(np.linalg.norm(q, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(q_scaled, q, rtol=1e-4, atol=1e-6)
    manual = (a**2).sum(-1).reshape(2, -1)
    np.testing.assert_allclose(
        q, manual / np.linalg.norm(manual, axis=-1, keepdims=True), rtol=1e-5
    )


@jax.jit
def _maps(a, c):
    return distill.attention_map(a), distill.attention_map(c * a)


def test_attention_loss_ignores_channel_count_and_checks_spatial_size():
    s = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))
    t = jnp.concatenate([s, -s], axis=-1)  # 6 channels, proportional attention map
    other = jax.random.normal(jax.random.key(1), (2, 4, 4, 6))
    loss = jax.jit(distill.attention_loss)
    assert float(loss(s, t)) < 1e-10
    assert float(loss(s, other)) > 0
    with pytest.raises(ValueError, match="spatial"):
        distill.attention_loss(s, jnp.ones((2, 3, 3, 3)))
    with pytest.raises(ValueError, match="spatial axis"):
        distill.attention_map(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="p must"):
        distill.attention_map(s, p=0.0)


# --- neuron-selective distillation --------------------------------------------------------------


def test_select_neurons_by_variance_mean_and_class_separation():
    key = jax.random.key(0)
    n, d = 400, 6
    scales = jnp.array([0.1, 3.0, 0.5, 2.0, 0.01, 1.0])
    a = jax.random.normal(key, (n, d)) * scales[None, :]
    np.testing.assert_array_equal(distill.select_neurons(a, 2, criterion="variance"), [1, 3])
    shifted = a + jnp.arange(d, dtype=jnp.float32)[None, :] * 10
    np.testing.assert_array_equal(distill.select_neurons(shifted, 2, criterion="mean"), [5, 4])
    labels = jnp.arange(n) % 2
    selective = a.at[:, 4].add(labels * 1.0)  # neuron 4: tiny noise, shifts with the class
    idx = distill.select_neurons(selective, 1, criterion="fisher", labels=labels)
    assert int(idx[0]) == 4
    with pytest.raises(ValueError, match="k must"):
        distill.select_neurons(a, 7)
    with pytest.raises(ValueError, match="criterion"):
        distill.select_neurons(a, 1, criterion="entropy")
    with pytest.raises(ValueError, match="labels"):
        distill.select_neurons(a, 1, criterion="fisher")


def test_neuron_loss_regresses_the_selected_neurons():
    t = jax.random.normal(jax.random.key(0), (3, 8))
    idx = jnp.array([5, 1])
    assert float(distill.neuron_loss(t[:, idx], t, idx)) == 0.0
    np.testing.assert_allclose(distill.neuron_loss(t[:, idx] + 2.0, t, idx), 2.0, rtol=1e-6)
    with pytest.raises(ValueError, match="selected"):
        distill.neuron_loss(t[:, :3], t, idx)


# --- the teacher-student objective --------------------------------------------------------------


@pytest.fixture(scope="module")
def pair():
    teacher = distill.MLP(features=(12, 10), num_classes=4)
    student = distill.MLP(features=(6,), num_classes=4)
    x = jax.random.normal(jax.random.key(0), (8, 5))
    y = jnp.arange(8) % 4
    tv = jax.jit(teacher.init)(jax.random.key(1), x)
    sv = jax.jit(student.init)(jax.random.key(2), x)
    return teacher, student, tv, sv, x, y


def _state(model, variables, lr=1e-2):
    return jc.train.TrainState.create(
        apply_fn=model.apply, variables=variables, tx=optax.adam(lr), key=jax.random.key(3)
    )


def test_objective_is_zero_with_zero_gradient_when_the_student_is_the_teacher(pair):
    teacher, _, tv, _, x, y = pair
    obj = distill.objective(
        teacher.apply, tv, [distill.kd_term(temperature=3.0), distill.mimic_term()]
    )
    state = _state(teacher, tv)
    (loss, (_, metrics)), g = jax.value_and_grad(obj, has_aux=True)(
        tv["params"], state, (x, y), None
    )
    assert abs(float(loss)) < 1e-6 and set(metrics) >= {"loss", "accuracy", "kd", "mimic"}
    assert max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g)) < 1e-5


def test_distillation_step_trains_the_student_and_its_regressor(pair):
    teacher, student, tv, sv, x, y = pair
    reg = distill.regressor(jax.random.key(4), (8, 6), (8, 10))
    params = distill.add_regressors(sv["params"], {"hint": reg})
    terms = [
        distill.kd_term(temperature=2.0, alpha=0.5),
        distill.hint_term("Dense_0", "Dense_1", regressor="hint", weight=0.5),
    ]
    step = jc.train.make_train_step(distill.objective(teacher.apply, tv, terms), donate=False)
    state = _state(student, {"params": params})
    first = None
    for _ in range(40):
        state, m = step(state, (x, y))
        first = float(m["loss"]) if first is None else first
    assert float(m["loss"]) < 0.5 * first
    moved = state.params[distill.REGRESSORS]["hint"]["kernel"] - reg["kernel"]
    assert float(jnp.max(jnp.abs(moved))) > 1e-3  # the regressor is trained
    # the student model still runs (Flax ignores the regressors) and evaluates
    assert student.apply({"params": state.params}, x).shape == (8, 4)


def test_cached_teacher_logits_give_the_same_objective(pair):
    teacher, student, tv, sv, x, y = pair
    obj = distill.objective(teacher.apply, tv, distill.kd_term(temperature=2.0))
    state = _state(student, sv)
    cached = distill.teacher_logits(teacher.apply, tv, np.asarray(x), batch_size=3)
    np.testing.assert_allclose(cached, teacher.apply(tv, x), rtol=1e-5, atol=1e-6)
    a = obj(sv["params"], state, (x, y), None)[0]
    b = obj(sv["params"], state, (x, y, jnp.asarray(cached)), None)[0]
    np.testing.assert_allclose(a, b, rtol=1e-5)
    hint = distill.objective(teacher.apply, tv, distill.hint_term("Dense_0", "Dense_0"))
    with pytest.raises(ValueError, match="cached"):
        hint(sv["params"], state, (x, y, jnp.asarray(cached)), None)


def test_objective_rejects_bad_terms_and_names_missing_layers(pair):
    teacher, student, tv, sv, x, y = pair
    with pytest.raises(ValueError, match="at least one"):
        distill.objective(teacher.apply, tv, [])
    with pytest.raises(ValueError, match="Term"):
        distill.objective(teacher.apply, tv, [distill.kd_loss])
    obj = distill.objective(teacher.apply, tv, distill.hint_term("Dense_0", "Conv_3"))
    with pytest.raises(ValueError, match=r"Conv_3.*Dense_0"):
        obj(sv["params"], _state(student, sv), (x, y), None)
    obj = distill.objective(
        teacher.apply, tv, distill.hint_term("Dense_0", "Dense_1", regressor="nope")
    )
    with pytest.raises(ValueError, match="add_regressors"):
        obj(sv["params"], _state(student, sv), (x, y), None)
    with pytest.raises(ValueError, match="weight"):
        distill.label_term(weight=float("nan"))


def test_repeated_term_names_are_reported_separately(pair):
    teacher, student, tv, sv, x, y = pair
    terms = [distill.kd_term(temperature=1.0), distill.kd_term(temperature=8.0)]
    _, (_, m) = distill.objective(teacher.apply, tv, terms)(
        sv["params"], _state(student, sv), (x, y), None
    )
    assert {"kd", "kd_1"} <= set(m) and float(m["kd"]) != float(m["kd_1"])


def test_attention_and_neuron_terms_in_an_objective():
    teacher = distill.ConvNet(
        features=(6,), hidden=(), pool=False, kernel_size=3, padding="SAME", num_classes=3
    )
    student = distill.ConvNet(
        features=(2,), hidden=(4,), pool=False, kernel_size=3, padding="SAME", num_classes=3
    )
    x = jax.random.normal(jax.random.key(0), (4, 6, 6, 1))
    y = jnp.array([0, 1, 2, 0])
    tv = jax.jit(teacher.init)(jax.random.key(1), x)
    sv = jax.jit(student.init)(jax.random.key(2), x)
    idx = jnp.array([0, 3, 5, 7])
    terms = [
        distill.attention_term([("Conv_0", "Conv_0")], weight=10.0),
        distill.neuron_term("Dense_0", "Conv_0", idx),
    ]
    obj = distill.objective(teacher.apply, tv, terms)
    state = _state(student, sv)
    loss, (_, m) = jax.jit(lambda p: obj(p, state, (x, y), None))(sv["params"])

    @jax.jit
    def by_hand(tv, sv):
        ft = jc.adapt.capture(teacher.apply, outputs="Conv_0")(tv, x)[1].outputs
        fs = jc.adapt.capture(student.apply, outputs=["Conv_0", "Dense_0"])(sv, x)[1].outputs
        at = distill.attention_loss(fs["Conv_0"], ft["Conv_0"])
        return at, distill.neuron_loss(fs["Dense_0"], ft["Conv_0"], idx)

    at, nl = by_hand(tv, sv)
    np.testing.assert_allclose(m["attention"], at, rtol=1e-5)
    np.testing.assert_allclose(loss, 10.0 * at + nl, rtol=1e-5)


# --- MUNGE pseudo data ----------------------------------------------------------------------------


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.sampled_from([2, 9, 33]), chunk=st.sampled_from([1, 4, 64]))
def test_nearest_neighbors_match_brute_force(seed, n, chunk):
    x = np.asarray(jax.random.normal(jax.random.key(seed), (n, 3, 2)))
    idx = np.asarray(distill.nearest_neighbors(x, chunk_size=chunk))
    flat = x.reshape(n, -1)
    d = ((flat[:, None] - flat[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (idx != np.arange(n)).all()
    np.testing.assert_allclose(d[np.arange(n), idx], d.min(1), rtol=1e-4, atol=1e-5)


def test_munge_swaps_and_perturbs_as_specified():
    x = jax.random.uniform(jax.random.key(0), (30, 4, 4, 1))
    x = x.at[:, 0, 0, 0].set(0.5)  # a feature on which every pair agrees
    nn_ = distill.nearest_neighbors(x)
    k = jax.random.key(1)
    np.testing.assert_allclose(distill.munge(x, key=k, p=1.0), x[nn_])
    np.testing.assert_allclose(distill.munge(x, key=k, p=0.0, scale=0.0), x)
    out = distill.munge(x, key=k, p=0.3, scale=1.0, multiplier=3)
    assert out.shape == (90, 4, 4, 1)
    np.testing.assert_allclose(out[:, 0, 0, 0], 0.5)  # |x - nn| = 0: never moves
    np.testing.assert_array_equal(out, distill.munge(x, key=k, p=0.3, scale=1.0, multiplier=3))
    clipped = distill.munge(x, key=k, p=0.0, scale=5.0, clip=(0.0, 1.0))
    assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0
    for bad in [{"p": 1.5}, {"scale": -1.0}, {"multiplier": 0}, {"clip": (1.0, 0.0)}]:
        with pytest.raises(ValueError, match=next(iter(bad))):
            distill.munge(x, key=k, **bad)


def test_pseudo_data_is_labelled_by_the_teacher(pair):
    teacher, _, tv, _, _, _ = pair
    rng = np.random.default_rng(0)
    ds = jc.data.from_arrays(
        rng.random((20, 5), dtype=np.float32),
        rng.integers(0, 4, 20),
        rng.random((6, 5), dtype=np.float32),
        rng.integers(0, 4, 6),
        num_classes=4,
        name="toy",
    )
    pd = distill.pseudo_data(ds, teacher.apply, tv, key=jax.random.key(0), multiplier=2)
    assert pd.num_train == 60 and pd.num_test == 6
    np.testing.assert_array_equal(pd.x_train[:20], ds.x_train)
    np.testing.assert_array_equal(pd.y_train[:20], ds.y_train)
    np.testing.assert_array_equal(
        pd.y_train[20:], np.argmax(teacher.apply(tv, pd.x_train[20:]), -1)
    )


# --- Bayesian dark knowledge ----------------------------------------------------------------------


def test_sgld_step_is_half_gradient_step_plus_noise_of_variance_eta():
    eta = 1e-2
    p = {"w": jnp.zeros((200, 100))}
    g = {"w": jnp.full((200, 100), 2.0)}
    out = distill.sgld_step(p, g, key=jax.random.key(0), learning_rate=eta)
    noise = out["w"] + 0.5 * eta * 2.0
    assert abs(float(jnp.mean(noise))) < 4 * np.sqrt(eta / noise.size)
    np.testing.assert_allclose(float(jnp.var(noise)), eta, rtol=0.05)
    again = distill.sgld_step(p, g, key=jax.random.key(0), learning_rate=eta)
    np.testing.assert_array_equal(out["w"], again["w"])


def test_bayesian_dark_knowledge_waits_for_burn_in_then_learns(pair):
    teacher, student, tv, sv, x, y = pair
    bdk = distill.bayesian_dark_knowledge(
        teacher.apply, num_train=8, learning_rate=1e-6, input_noise=0.01, burn_in=2
    )
    state = bdk.init(tv["params"], _state(student, sv, lr=3e-2), key=jax.random.key(0))
    for _ in range(2):
        state, m = bdk.step(state, (x, y))
        assert float(m["student_loss"]) == 0.0
    jax.tree.map(np.testing.assert_array_equal, state.student.params, sv["params"])
    moved = jax.tree.map(
        lambda a, b: float(jnp.max(jnp.abs(a - b))), state.teacher_params, tv["params"]
    )
    assert max(jax.tree.leaves(moved)) > 0  # the teacher is sampled
    losses = []
    for _ in range(30):
        state, m = bdk.step(state, (x, y))
        losses.append(float(m["student_loss"]))
    assert int(state.step) == 32 and losses[-1] < 0.5 * losses[0]
    for bad in [
        {"num_train": 0},
        {"learning_rate": 0.0},
        {"burn_in": -1},
        {"input_noise": -1.0},
        {"prior_precision": -1.0},
    ]:
        kw = {"num_train": 8, "learning_rate": 1e-3, **bad}
        with pytest.raises(ValueError, match=next(iter(bad))):
            distill.bayesian_dark_knowledge(teacher.apply, **kw)


# --- students -------------------------------------------------------------------------------------


def test_student_models_validate_their_shapes():
    with pytest.raises(ValueError, match="features"):
        distill.MLP(features=(0,))
    with pytest.raises(ValueError, match="padding"):
        distill.ConvNet(padding="FULL")
    net, x = distill.ConvNet(), jnp.ones((1, 28, 28, 1))
    v = jax.eval_shape(net.init, jax.random.key(0), x)  # shapes only: nothing to compile
    _, got = jax.eval_shape(jc.adapt.capture(net.apply, outputs=["Conv_0", "Conv_1"]), v, x)
    f = got.outputs
    assert f["Conv_0"].shape == (1, 24, 24, 8) and f["Conv_1"].shape == (1, 8, 8, 16)  # LeNet-5's
