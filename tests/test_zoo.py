"""Every model of the zoo takes every compression (issue 14), at toy sizes.

For each registered network: magnitude pruning leaves exactly the requested zeros and the model
runs on them; fake quantization's baked codes are what it trained with and the model runs on them
within a quantization step of dense; SVD at full rank through ``run_factorized`` equals the dense
model; W8A8 activation quantization calibrates and stays close to dense; and structured pruning
finds the channel groups and the physically smaller model computes the masked model.
"""

import functools
from typing import Any
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _models_util import random_like
from _models_util import shapes

import jaxcomp as jc
from jaxcomp import models

_GOOGLENET = {"stem": (1, 2, 2), "modules": [(1, 1, 2, 1, 1, 1)] * 9, "dropout": 0.0}
_SQUEEZENET = {"stem": 2, "base_e": 4, "incr_e": 2, "squeeze_ratio": 0.5, "dropout": 0.0}
_FRACTAL = {"columns": 2, "widths": (2, 3), "local_drop": 0.0, "global_drop": 0.0}

# every registered name at a toy size (widths of a few channels, small inputs, few blocks); a toy
# keeps every block type of its network (the ImageNet ResNets: an identity and a projection
# shortcut, the bottleneck's at stride 1 and 2; MobileNet: depthwise convolutions at strides 1
# and 2), the published sizes are checked abstractly in tests/test_zoo_*.py
TOYS = {
    "lenet300": ({}, (28, 28, 1)),
    "lenet300100": ({}, (28, 28, 1)),
    "lenet5": ({}, (16, 16, 1)),
    "vgg_small": ({"widths": (4, 8)}, (8, 8, 3)),
    # the CIFAR ResNets at depth 8 (their class and other fixed attributes, one block a stage):
    # resnet20, 56 and 110 are one case; resnet110_sd adds stochastic depth's eval scaling
    "resnet20": ({"width": 1, "depth": 8}, (4, 4, 3)),
    "resnet56": ({"width": 1, "depth": 8}, (4, 4, 3)),
    "resnet110": ({"width": 1, "depth": 8}, (4, 4, 3)),
    "resnet110_sd": ({"width": 1, "depth": 8}, (4, 4, 3)),
    "resnet18": ({"width": 1, "stage_sizes": (1, 1)}, (8, 8, 3)),
    "resnet50": ({"width": 1, "stage_sizes": (2, 1)}, (8, 8, 3)),
    "fractalnet": (_FRACTAL, (8, 8, 3)),
    "densenet_bc_100_12": ({"depth": 10, "growth_rate": 2}, (8, 8, 3)),
    "nin": ({"widths": ((3, 2), (3, 2), (2,)), "dropout": 0.0}, (8, 8, 3)),
    "vgg16": ({"widths": (1, 2, 2, 2, 2), "hidden": 3, "dropout": 0.0}, (32, 32, 3)),
    "vgg16_cifar": ({"widths": (1, 2, 2, 2, 2)}, (32, 32, 3)),
    "googlenet": (_GOOGLENET, (15, 15, 3)),
    "squeezenet1_0": (_SQUEEZENET, (21, 21, 3)),
    "squeezenet1_1": (_SQUEEZENET, (17, 17, 3)),
    "mobilenet_v1": ({"alpha": 1 / 32, "repeats": 0}, (32, 32, 3)),
    "shufflenet_v1_g3": ({"widths": (12, 24), "stem": 3, "repeats": (2, 1)}, (16, 16, 3)),
    "flattened": ({"widths": (2, 4), "kernel_size": 3}, (8, 8, 3)),
    "nasnet_a_mobile": (
        {"num_cells": 1, "penultimate_filters": 96, "stem_filters": 4}, (32, 32, 3)
    ),
}  # fmt: skip


def test_toys_cover_the_registry():
    assert set(TOYS) == set(models.names())


class Case(NamedTuple):
    model: Any
    variables: dict[str, Any]
    x: jax.Array
    run: Any  # the jitted eval-mode apply
    dense: jax.Array  # its output on x
    factorized: Any  # the jitted eval-mode apply through run_factorized
    w8a8: Any  # the jitted calibrating apply with quantized activations


def _case(name):
    kw, shape = TOYS[name]
    entry = models._registry._MODELS[name]
    # the registry's class with the attributes its name fixes, overridden by the toy's; names
    # whose toys coincide (an alias, the deep ResNets at depth 8) share one case and its compiles
    attrs = {**entry.fixed, **kw}
    return _build(entry.cls, repr(sorted(attrs.items())), shape, name)


@functools.cache
def _build(cls, key, shape, name):
    kw, _ = TOYS[name]
    entry = models._registry._MODELS[name]
    model = cls(num_classes=5, **{**entry.fixed, **kw})
    variables = random_like(shapes(model, shape), 0)
    x = jnp.asarray(np.random.default_rng(1).standard_normal((2, *shape)), jnp.float32)
    run = jax.jit(functools.partial(model.apply, train=False))
    factorized = jax.jit(functools.partial(jc.adapt.run_factorized(model.apply), train=False))
    q = jc.quant.activations(model.apply, rules=[(".*", 8)])
    w8a8 = jax.jit(functools.partial(q, train=False, mutable=["quant_stats"]))
    return Case(model, variables, x, run, run(variables, x), factorized, w8a8)


_PRUNE = jc.prune.magnitude(sparsity=0.5)
_QUANT = jc.quant.fake_quant(bits=8)


@jax.jit  # one compile per params structure (eager calls compile each op per leaf shape)
def _compress(params):
    pruned = _PRUNE.apply(*_PRUNE.init(params))
    c, s = _QUANT.init(params)
    baked = _QUANT.finalize(c, s)
    return pruned, _QUANT.apply(c, s), baked, jc.to_dense(baked)


def _close(a, b, tol):
    scale = float(jnp.abs(b).max()) + 1e-6
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_pruning_and_fake_quantization(name):
    case = _case(name)
    variables, x, run = case.variables, case.x, case.run
    params = variables["params"]
    pruned, quantized, baked, baked_dense = _compress(params)
    kernels = [
        (jc.core.path_str(p), leaf, pruned_leaf)
        for (p, leaf), pruned_leaf in zip(
            jax.tree_util.tree_leaves_with_path(params), jax.tree.leaves(pruned), strict=True
        )
        if jc.core.path_str(p).endswith("kernel")
    ]
    assert kernels
    for path, leaf, pruned_leaf in kernels:  # every kernel at exactly half zeros
        zeros = int(np.sum(np.asarray(pruned_leaf) == 0))
        assert zeros in (leaf.size // 2, (leaf.size + 1) // 2), path
    assert np.isfinite(run({**variables, "params": pruned}, x)).all()
    # the baked int8 codes are what the model was trained with, and it runs close to dense
    jax.tree.map(np.testing.assert_array_equal, baked_dense, quantized)
    assert any(jc.is_compressed(n) for n in jax.tree.leaves(baked, is_leaf=jc.is_compressed))
    _close(run({**variables, "params": quantized}, x), case.dense, 0.05)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_full_rank_svd_runs_factorized_and_equals_dense(name):
    case = _case(name)
    t = jc.lowrank.svd(energy=1.0)  # factorized on the host (numpy), every kernel at full rank
    factors = t.finalize(*t.init(case.variables["params"]))
    _close(case.factorized({**case.variables, "params": factors}, case.x), case.dense, 1e-4)


@pytest.mark.parametrize("name", sorted(TOYS))
def test_w8a8_activations_calibrate_and_stay_close(name):
    case = _case(name)
    y, stats = case.w8a8(case.variables, case.x)
    assert jax.tree.leaves(stats["quant_stats"])
    _close(y, case.dense, 0.05)


_SHRUNK: dict[int, Any] = {}  # per case: names whose toys coincide shrink once


def _shrunk(case):
    if id(case) not in _SHRUNK:
        apply = functools.partial(case.model.apply, train=False)
        groups = jc.structured.groups(apply, case.variables, case.x[:1])

        @jax.jit  # one compile for the scores, the masks and the masked variables of every leaf
        def masks_and_masked(variables):
            masks = jc.structured.masks(apply, variables, case.x, ratio=0.5, groups=groups)
            return masks, jc.structured.apply_masks(variables, masks)

        masks, masked_variables = masks_and_masked(case.variables)
        small_apply, small = jc.structured.shrink(apply, case.variables, masks)
        masked = case.run(masked_variables, case.x)
        _SHRUNK[id(case)] = groups, small, jax.jit(small_apply)(small, case.x), masked
    return _SHRUNK[id(case)]


@pytest.mark.parametrize("name", sorted(TOYS))
def test_structured_groups_and_the_smaller_model(name):
    case = _case(name)
    groups, small, out, masked = _shrunk(case)
    assert len(groups) >= 1
    _close(out, masked, 1e-5)
    assert jc.analysis.param_count(small["params"]) < jc.analysis.param_count(
        case.variables["params"]
    )
