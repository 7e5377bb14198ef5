"""Shared helpers for the model tests: shapes without running initializers, numpy weights, and
the NNX-twin check (same params paths as linen, same outputs from the same weights)."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxcomp import models
from jaxcomp.adapt import functional
from jaxcomp.analysis import flops
from jaxcomp.core._tree import path_str


def shapes(model, input_shape):
    """A linen model's variables as ShapeDtypeStructs, without running the initializers."""
    return jax.eval_shape(
        functools.partial(models.init, model, input_shape=input_shape), jax.random.key(0)
    )


def abstract_counts(model, input_shape):
    """``(variables, mult-adds)`` of a linen model on one example, both computed abstractly (no
    initializer or convolution runs), checking on the way that the model maps the example to
    ``(1, num_classes)`` float32 logits: the count tests that call this at a model's natural
    input are its natural-input test too (``test_models`` lists them in ``COUNTED``).

    One trace: ``models.init``'s forward pass (``init_with_output`` in eval mode, the code path of
    ``apply``, which no model of the zoo branches from) gives the logits and the variables, and
    its convolutions and matmuls are the mult-adds (the initializers have none)."""
    out = []

    def init(key, x):
        out.append(model.init_with_output(key, x, train=False))
        return out[-1]

    macs = flops(init, jax.random.key(0), jax.ShapeDtypeStruct((1, *input_shape), jnp.float32))
    logits, variables = jax.tree.map(lambda t: jax.ShapeDtypeStruct(t.shape, t.dtype), out[0])
    assert logits.shape == (1, model.num_classes), logits.shape
    assert logits.dtype == jnp.float32
    return variables, macs


def params_and_macs(model, input_shape):
    """``(params, mult-adds)`` of a linen model on one example (:func:`abstract_counts`)."""
    variables, macs = abstract_counts(model, input_shape)
    return count(variables["params"]), macs


def count(params):
    """The number of scalars in a tree of arrays or ShapeDtypeStructs."""
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))


def paths(params):
    """``{"Conv_0/kernel": shape, ...}`` of a tree."""
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    return {path_str(path): leaf.shape for path, leaf in flat}


def random_like(tree, seed):
    """Random weights and batch statistics (positive variances) of the given shapes, drawn with
    numpy (jax.random would compile a sampler for every distinct shape)."""
    rng = np.random.default_rng(seed)
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    leaves = []
    for path, s in flat:
        x = (0.5 * rng.standard_normal(s.shape)).astype(s.dtype)
        leaves.append(np.abs(x) + 0.5 if path_str(path).endswith("var") else x)
    return jax.tree.unflatten(treedef, leaves)


def assert_nnx_twin(name, kw, input_shape, *, outputs=True, train=True):
    """``models.get(name, api="nnx")`` has the linen model's variable paths and shapes, and (with
    ``outputs``) the same eval-mode outputs (and, with ``train``, train-mode outputs and batch
    statistics) from the same random weights, each model jitted whole (one compile per call)."""
    linen = models.get(name, **kw)
    tree = shapes(linen, input_shape)
    # built abstractly (no initializers run): the NNX model gets the linen variables below
    model = nnx.eval_shape(
        lambda: models.get(name, api="nnx", key=jax.random.key(1), input_shape=input_shape, **kw)
    )
    assert isinstance(model, nnx.Module)
    apply, own = functional(model)
    assert jax.tree.map(jnp.shape, own) == jax.tree.map(jnp.shape, tree)
    assert count(own["params"]) == count(tree["params"])
    if not outputs:
        return
    variables = random_like(tree, 0)
    x = np.random.default_rng(2).standard_normal((3, *input_shape)).astype(np.float32)
    close = functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-5)
    run = lambda fn, **kw: jax.jit(functools.partial(fn, **kw))(variables, x)
    y = run(apply, train=False)
    close(y, run(linen.apply, train=False))
    if train and "batch_stats" in variables:
        out, stats = run(apply, train=True, mutable=["batch_stats"])
        ref, ref_stats = run(linen.apply, train=True, mutable=["batch_stats"])
        close(out, ref)
        jax.tree.map(close, stats, dict(ref_stats))
        assert not np.allclose(out, y)
