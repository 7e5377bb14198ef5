"""Contract cases of jaxcomp.prune: every public transform at small hyperparameters."""

import jax
import jax.numpy as jnp

from jaxcomp import prune
from jaxcomp import schedules

CASES = [
    ("prune.magnitude(layer)", lambda: prune.magnitude(sparsity=0.5)),
    (
        "prune.magnitude(global, gradual)",
        lambda: prune.magnitude(
            sparsity=schedules.polynomial(0.0, 0.8, begin=0, end=4), scope="global", update_every=2
        ),
    ),
    ("prune.magnitude(erk)", lambda: prune.magnitude(sparsity=0.7, distribution="erk")),
    ("prune.random", lambda: prune.random(sparsity=0.5, key=jax.random.key(0))),
    ("prune.taylor", lambda: prune.taylor(sparsity=0.5, update_every=2)),
    (
        "prune.obd",
        lambda: prune.obd(sparsity=0.5, hessian_diag=lambda p: jax.tree.map(jnp.ones_like, p)),
    ),
    ("prune.nm(1:2)", lambda: prune.nm(n=1, m=2)),
    (
        "prune.fixed_masks",
        lambda: prune.fixed_masks(lambda p: prune.magnitude(sparsity=0.5).init(p)[1].masks),
    ),
    ("prune.hashed", lambda: prune.hashed(compression=4, key=jax.random.key(0))),
    ("prune.soft_sharing", lambda: prune.soft_sharing(components=4)),
    (
        "prune.build_pruner",
        lambda: prune.build_pruner(lambda w, leaf, step: jnp.square(w), sparsity=0.5),
    ),
]
