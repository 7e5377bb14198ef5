"""Contract cases of jaxcomp.structured.

A structured transform is built for one model (its groups are traced from the model's jaxpr), so
each case builds it for both contract trees: the tiny linen net of ``conftest.py`` and the NNX
``Linear(144, 16) -> relu -> Linear(16, 3)`` of ``test_contract.py``, and uses the one whose leaves
it is given.
"""

import jax
import jax.numpy as jnp
from conftest import TinyNet
from flax import nnx

import jaxcomp as jc


def _models():
    net = TinyNet()
    x = jnp.zeros((1, 6, 6, 2), jnp.float32)
    linen = (net.apply, net.init(jax.random.key(0), x), x)
    model = nnx.Sequential(
        nnx.Linear(144, 16, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(16, 3, rngs=nnx.Rngs(1))
    )
    apply_fn, variables = jc.adapt.functional(model)
    return linen, (apply_fn, variables, jnp.zeros((1, 144), jnp.float32))


def _for_either(**kwargs):
    linen, nnx_ = _models()
    both = [jc.structured.channels(*m, **kwargs) for m in (linen, nnx_)]

    def pick(tree):
        paths = {jc.core.path_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)}
        return both[0] if any(p.startswith(("Dense", "Conv")) for p in paths) else both[1]

    return jc.Transform(
        init=lambda params: pick(params).init(params),
        apply=lambda c, s: pick(c).apply(c, s),
        update=lambda c, s, *, step, grads=None: pick(c).update(c, s, step=step, grads=grads),
        finalize=lambda c, s: pick(c).finalize(c, s),
    )


CASES = [
    ("structured.brain_damage", lambda: jc.structured.brain_damage(sparsity=0.5)),
    ("structured.kernel_level", lambda: jc.structured.kernel_level(sparsity=0.5)),
    ("structured.channels(l1)", lambda: _for_either(ratio=0.5)),
    (
        "structured.channels(taylor, global, gradual)",
        lambda: _for_either(
            ratio=jc.schedules.linear(0.0, 0.5, begin=0, end=2),
            criterion="taylor",
            scope="global",
        ),
    ),
]
