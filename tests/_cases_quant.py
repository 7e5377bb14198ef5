"""Contract cases of jaxcomp.quant: every public transform at small hyperparameters."""

import jax

from jaxcomp import quant

CASES = [
    ("quant.fake_quant", lambda: quant.fake_quant(bits=4, per_channel=True)),
    (
        "quant.fake_quant(stochastic, affine)",
        lambda: quant.fake_quant(
            bits=4, symmetric=False, rounding="stochastic", key=jax.random.key(0)
        ),
    ),
    (
        "quant.fake_quant(learned_step)",
        lambda: quant.fake_quant(bits=4, per_channel=True, learned_step=True),
    ),
    ("quant.fixed_point", lambda: quant.fixed_point(fractional_length=8, key=jax.random.key(0))),
    ("quant.kmeans", lambda: quant.kmeans(clusters=4)),
    ("quant.ecsq", lambda: quant.ecsq(bits=2, rate=0.05)),
    (
        "quant.product_quant",
        lambda: quant.product_quant(subvector=2, clusters=2, key=jax.random.key(0)),
    ),
    (
        "quant.residual_quant",
        lambda: quant.residual_quant(stages=2, clusters=2, key=jax.random.key(0)),
    ),
    (
        "quant.binary_connect",
        lambda: quant.binary_connect(rounding="stochastic", scale="glorot", key=jax.random.key(0)),
    ),
    ("quant.binary_weights", lambda: quant.binary_weights()),
    ("quant.ternary_weights", lambda: quant.ternary_weights()),
    ("quant.ternary_connect", lambda: quant.ternary_connect(key=jax.random.key(0))),
    ("quant.loss_aware_binary", lambda: quant.loss_aware_binary()),
    ("quant.noise", lambda: quant.noise(std=0.1, kind="multiplicative", key=jax.random.key(0))),
    ("quant.power_of_two", lambda: quant.power_of_two(bits=4)),
]
