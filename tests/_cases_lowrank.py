"""Contract cases of jaxcomp.lowrank: every public transform at small hyperparameters.

The tiny params have ``Conv_0/kernel`` (3, 3, 2, 4), ``Dense_0/kernel`` (144, 16) and
``Dense_1/kernel`` (16, 3); the ``nnx`` state has (144, 16) and (16, 3) kernels. The convolution
methods, at their default selection, leave a tree without convolutions unchanged.
"""

import jax

from jaxcomp import lowrank

_KEY = jax.random.key(0)

CASES = [
    ("lowrank.svd(rank)", lambda: lowrank.svd(rank=2)),
    ("lowrank.svd(energy)", lambda: lowrank.svd(energy=0.9)),
    ("lowrank.svd(compression)", lambda: lowrank.svd(compression=2.0)),
    ("lowrank.jaderberg", lambda: lowrank.jaderberg(rank=2)),
    ("lowrank.cp", lambda: lowrank.cp(rank=3, iterations=5, key=_KEY)),
    ("lowrank.tucker2", lambda: lowrank.tucker2(rank=(2, 3))),
    ("lowrank.monochromatic", lambda: lowrank.monochromatic(colors=2, key=_KEY)),
    (
        "lowrank.bicluster",
        lambda: lowrank.bicluster(groups_in=2, groups_out=2, rank=2, key=_KEY),
    ),
    ("lowrank.separable_basis", lambda: lowrank.separable_basis(rank=2, iterations=5, key=_KEY)),
    ("lowrank.predicted", lambda: lowrank.predicted(rank=3)),
]
