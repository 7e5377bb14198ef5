"""Tests of the reference models: param counts from the papers, shapes, batch norm, errors."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_util import abstract_counts
from _models_util import assert_nnx_twin
from _models_util import count as _count
from _models_util import paths as _paths
from _models_util import shapes as _shapes
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from jaxcomp import models

_BASE = ("lenet300", "lenet300100", "lenet5", "vgg_small", "resnet20", "resnet56", "resnet110")
_MNIST = (28, 28, 1)
_CIFAR = (32, 32, 3)


def test_lenet300100_has_the_papers_param_count_and_flax_paths():
    params = _shapes(models.LeNet300100(), _MNIST)["params"]
    expected = (784 * 300 + 300) + (300 * 100 + 100) + (100 * 10 + 10)
    assert expected == 266_610
    assert _count(params) == expected
    assert _paths(params) == {
        "Dense_0/kernel": (784, 300),
        "Dense_0/bias": (300,),
        "Dense_1/kernel": (300, 100),
        "Dense_1/bias": (100,),
        "Dense_2/kernel": (100, 10),
        "Dense_2/bias": (10,),
    }


def test_lenet5_has_the_papers_param_count():
    params = _shapes(models.LeNet5(), _MNIST)["params"]
    # conv 5x5x1x20, pool -> 12x12, conv 5x5x20x50, pool -> 4x4x50 = 800 features.
    expected = (25 * 20 + 20) + (25 * 20 * 50 + 50) + (800 * 500 + 500) + (500 * 10 + 10)
    assert expected == 431_080
    assert _count(params) == expected
    assert _paths(params)["Dense_0/kernel"] == (800, 500)


@pytest.mark.parametrize(
    ("name", "paper_params"),
    [("resnet20", 0.27e6), ("resnet56", 0.85e6), ("resnet110", 1.7e6)],
)
def test_resnet_param_counts_match_he_et_al_table_6(name, paper_params):
    assert models.input_shape(name) == _CIFAR
    # at the natural input, so this is the natural-input test too (COUNTED)
    count = _count(abstract_counts(models.get(name), _CIFAR)[0]["params"])
    if name == "resnet20":
        assert 0.26e6 <= count <= 0.28e6
    # The paper rounds to two significant figures.
    assert abs(count - paper_params) / paper_params < 0.03


@settings(max_examples=5, deadline=None)
@given(n=st.integers(1, 3), width=st.integers(1, 4))
def test_resnet_depth_counts_weighted_layers_and_option_a_adds_no_params(n, width):
    depth = 6 * n + 2
    params_a = _shapes(models.ResNet(depth=depth, width=width), _CIFAR)["params"]
    shapes = _paths(params_a).values()
    conv_kernels = [s for s in shapes if len(s) == 4]
    dense_kernels = [s for s in shapes if len(s) == 2]
    assert len(conv_kernels) + len(dense_kernels) == depth
    assert all(s[:2] == (3, 3) for s in conv_kernels)
    # Option B adds a 1x1 conv + batch norm at the two downsampling blocks; option A adds nothing.
    params_b = _shapes(models.ResNet(depth=depth, width=width, shortcut="B"), _CIFAR)["params"]
    projections = (width * 2 * width + 2 * 2 * width) + (2 * width * 4 * width + 2 * 4 * width)
    assert _count(params_b) - _count(params_a) == projections


def test_vgg_small_is_small():
    assert _count(_shapes(models.VGGSmall(), _CIFAR)["params"]) < 1.5e6


def test_registry_names_and_alias():
    required = {"lenet300", "lenet300100", "lenet5", "vgg_small", "resnet20", "resnet56"}
    assert required | {"resnet110"} <= set(models.names())
    assert models.get("lenet300100") == models.get("lenet300")
    assert models.get("resnet56").depth == 56
    assert COUNTED <= set(models.names())
    assert models.get("resnet110", num_classes=100).num_classes == 100


# traced at their natural input by the count tests (here and tests/test_zoo_*.py), through
# _models_util.abstract_counts, which checks the logits there: a full-size trace each, not two
COUNTED = {
    "resnet20", "resnet56", "resnet110", "resnet110_sd", "nin", "vgg16", "vgg16_cifar",
    "googlenet", "squeezenet1_0", "squeezenet1_1", "resnet18",
    "resnet50", "fractalnet", "densenet_bc_100_12", "mobilenet_v1", "shufflenet_v1_g3",
    "flattened", "nasnet_a_mobile",
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(set(models.names()) - COUNTED))
def test_every_registered_model_maps_its_natural_input_to_logits(name):
    model = models.get(name, num_classes=7)
    shape = models.input_shape(name)
    if name in _BASE:
        assert shape == (_MNIST if name.startswith("lenet") else _CIFAR)
    variables = _shapes(model, shape)
    x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
    logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
    assert logits.shape == (2, 7)
    assert logits.dtype == jnp.float32


def test_init_helper_matches_model_init_and_is_deterministic():
    model = models.LeNet300100(num_classes=3)
    key = jax.random.key(3)
    a = models.init(model, key, (5, 5, 1))
    # flax's own init (its default train=False) on a zero batch of one, compiled whole (eagerly,
    # every initializer compiles on its own; jit computes the same random numbers)
    b = jax.jit(model.init)(key, jnp.zeros((1, 5, 5, 1)))
    jax.tree.map(np.testing.assert_array_equal, a, b)
    c = models.init(model, jax.random.key(4), (5, 5, 1))
    assert not np.array_equal(a["params"]["Dense_0"]["kernel"], c["params"]["Dense_0"]["kernel"])
    x = np.random.default_rng(0).standard_normal((2, 5, 5, 1)).astype(np.float32)
    assert jax.jit(model.apply)(a, x).shape == (2, 3)


@functools.cache
def _bn_case(label):
    """A small batch-norm model, random variables and its jitted train and eval applies.

    The variables are drawn with numpy from the model's variable shapes (batch-norm statistics
    included, so the momentum test does not rely on them starting at 0 and 1); this avoids
    compiling the initializers, which is slow on a small CPU. Cached so both tests share compiles.
    """
    model, shape = {
        "vgg": (models.VGGSmall(widths=(4, 8), num_classes=3), (16, 16, 3)),
        "resnet": (models.ResNet(depth=8, width=4, num_classes=3), (8, 8, 3)),
    }[label]
    rng = np.random.default_rng(0)
    shapes = _shapes(model, shape)
    params = jax.tree.map(
        lambda s: (0.5 * rng.standard_normal(s.shape)).astype(np.float32), shapes["params"]
    )
    stats = jax.tree.map(
        lambda s: rng.uniform(0.5, 1.5, s.shape).astype(np.float32), shapes["batch_stats"]
    )
    variables = {"params": params, "batch_stats": stats}
    train = jax.jit(
        functools.partial(
            model.apply,
            train=True,
            mutable=["batch_stats", "intermediates"],
            capture_intermediates=True,
        )
    )
    return shape, variables, train, jax.jit(model.apply)


def _images(seed, n, shape, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * rng.standard_normal((n, *shape)) + 1.0).astype(np.float32)


@pytest.mark.parametrize("label", ["vgg", "resnet"])
def test_train_updates_batch_stats_with_momentum_0_9(label):
    shape, variables, apply_train, _ = _bn_case(label)
    x = _images(1, 2, shape, scale=2.0)
    logits, updates = apply_train(variables, x)
    assert logits.shape == (2, 3)
    old, new = variables["batch_stats"], updates["batch_stats"]
    assert jax.tree.structure(old) == jax.tree.structure(new)
    changed = jax.tree.map(lambda a, b: not np.allclose(a, b), old, new)
    assert all(jax.tree.leaves(changed))
    # The first BatchNorm normalizes the first conv's output; its running statistics move 10% of
    # the way to the batch statistics.
    conv_out = updates["intermediates"]["Conv_0"]["__call__"][0]
    batch_mean = jnp.mean(conv_out, axis=(0, 1, 2))
    batch_var = jnp.var(conv_out, axis=(0, 1, 2))
    old_bn, new_bn = old["BatchNorm_0"], new["BatchNorm_0"]
    np.testing.assert_allclose(
        new_bn["mean"], 0.9 * old_bn["mean"] + 0.1 * batch_mean, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(new_bn["var"], 0.9 * old_bn["var"] + 0.1 * batch_var, rtol=1e-4)


@pytest.mark.parametrize("label", ["vgg", "resnet"])
def test_eval_mode_uses_running_stats_so_examples_are_independent(label):
    shape, variables, apply_train, apply_eval = _bn_case(label)
    x = _images(1, 2, shape, scale=2.0)
    swapped = np.concatenate([x[:1], _images(2, 1, shape, scale=5.0)])
    np.testing.assert_allclose(
        apply_eval(variables, swapped)[0], apply_eval(variables, x)[0], rtol=1e-5, atol=1e-6
    )
    # In training mode the batch statistics couple the examples.
    first_train = apply_train(variables, x)[0][0]
    swapped_train = apply_train(variables, swapped)[0][0]
    assert not np.allclose(first_train, swapped_train, rtol=1e-3)


def test_lenet5_rejects_inputs_smaller_than_16x16():
    model = models.LeNet5()
    # 16 is the least size: (16 - 4) // 2 = 6, 6 - 4 = 2, 2 // 2 = 1 pixel left.
    assert _count(_shapes(model, (16, 16, 1))["params"]) == 431_080 - (800 - 50) * 500
    with pytest.raises(ValueError, match=r"\(1, 8, 8, 1\).*16"):
        models.init(model, jax.random.key(0), (8, 8, 1))
    with pytest.raises(ValueError, match="16"):
        models.init(model, jax.random.key(0), (28, 15, 1))


def test_vgg_small_rejects_inputs_too_small_for_its_pools():
    with pytest.raises(ValueError, match="8"):
        models.init(models.VGGSmall(), jax.random.key(0), (4, 4, 3))


@settings(max_examples=15, deadline=None)
@given(depth=st.integers(-3, 120).filter(lambda d: d < 8 or (d - 2) % 6 != 0))
def test_resnet_rejects_depths_that_are_not_6n_plus_2(depth):
    with pytest.raises(ValueError, match="depth"):
        models.ResNet(depth=depth)


def test_bad_hyperparameters_raise_value_error():
    with pytest.raises(ValueError, match="shortcut"):
        models.ResNet(shortcut="C")
    with pytest.raises(ValueError, match="num_classes"):
        models.LeNet5(num_classes=0)
    with pytest.raises(ValueError, match="widths"):
        models.VGGSmall(widths=())


def test_registry_errors_name_the_allowed_values():
    with pytest.raises(ValueError, match="resnet20") as info:
        models.get("resnet21")
    assert all(name in str(info.value) for name in models.names())
    with pytest.raises(ValueError, match="unknown model"):
        models.input_shape("alexnet")
    with pytest.raises(ValueError, match="width"):
        models.get("resnet20", depth=56)
    with pytest.raises(ValueError, match="widths"):
        models.get("vgg_small", width=3)
    assert models.get("resnet20", width=8).width == 8


# Flax NNX twins: same params paths as linen, same outputs from the same weights (eval and train).

_NNX_CASES = [  # every registered name; small widths and inputs keep the runs short
    ("lenet300", {}, _MNIST),
    ("lenet300100", {}, _MNIST),
    ("lenet5", {}, _MNIST),
    ("vgg_small", {"widths": (4, 8)}, (8, 8, 3)),
    ("vgg_small", {"widths": (4,), "convs_per_stage": 1, "hidden": 6}, (4, 4, 2)),
    ("resnet20", {"width": 4}, (8, 8, 3)),
    ("resnet20", {"width": 2, "shortcut": "B"}, (4, 4, 3)),
    ("resnet56", {"width": 2}, (4, 4, 3)),
    ("resnet110", {"width": 2}, (4, 4, 3)),
]


def test_nnx_cases_cover_the_original_models():
    # the zoo's models (issue 14) have their twin tests in tests/test_zoo_*.py
    assert {name for name, _, _ in _NNX_CASES} == set(_BASE)


@pytest.mark.parametrize(("name", "kw", "input_shape"), _NNX_CASES)
def test_nnx_twin_has_the_linen_paths_and_outputs(name, kw, input_shape):
    # resnet56/110 are resnet20's blocks, whose outputs are compared: paths and counts suffice
    assert_nnx_twin(name, kw, input_shape, outputs=name not in ("resnet56", "resnet110"))


def test_nnx_get_errors_name_the_arguments():
    with pytest.raises(ValueError, match="'linen', 'nnx'"):
        models.get("lenet5", api="haiku")
    with pytest.raises(ValueError, match="key"):
        models.get("lenet5", api="nnx")
    with pytest.raises(ValueError, match="api='nnx'"):
        models.get("lenet5", key=jax.random.key(0))
    with pytest.raises(ValueError, match="input_shape"):
        models.get("lenet5", api="nnx", key=jax.random.key(0), input_shape=(28, 28))
    with pytest.raises(ValueError, match="too small"):
        models.get("lenet5", api="nnx", key=jax.random.key(0), input_shape=(12, 12, 1))
    model = models.get("lenet5", api="nnx", key=jax.random.key(0), input_shape=(32, 32, 3))
    assert model.Conv_0.kernel.shape == (5, 5, 3, 20)
    assert model(jnp.zeros((1, 32, 32, 3))).shape == (1, 10)
