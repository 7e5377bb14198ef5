"""Shared test settings: strict shapes, warnings as errors (pyproject), tiny shared fixtures."""

import os
import sys

# Each xdist worker gets one BLAS thread (numpy's OpenBLAS, used by the host-side decompositions):
# two workers on two cores with OpenBLAS's own threads spinning made a 784x300 SVD take 10 s
# instead of 0.07 s. Must be set before numpy is first imported.
if "numpy" not in sys.modules:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

# The suite's time is mostly XLA compiling tiny programs, not running them: LLVM's cheaper
# optimization level compiles ~20% faster (test_structured.py: 82 -> 64 CPU s) and the programs
# compute the same functions. Set before JAX starts its backend; a user's XLA_FLAGS are kept.
os.environ["XLA_FLAGS"] = " ".join(
    filter(
        None,
        [
            os.environ.get("XLA_FLAGS"),
            "--xla_backend_optimization_level=0",
            "--xla_llvm_disable_expensive_passes=true",
        ],
    )
)

import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn

jax.config.update("jax_numpy_rank_promotion", "raise")


class TinyNet(nn.Module):
    """A conv then two dense layers: enough structure for every transform, tiny to compile."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = nn.Conv(4, (3, 3))(x)
        x = nn.relu(x).reshape((x.shape[0], -1))
        x = nn.relu(nn.Dense(16)(x))
        return nn.Dense(3)(x)


@pytest.fixture(scope="session")
def tiny_net():
    return TinyNet()


@pytest.fixture(scope="session")
def tiny_params(tiny_net):
    x = jnp.zeros((1, 6, 6, 2), jnp.float32)
    return tiny_net.init(jax.random.key(0), x)["params"]


@pytest.fixture(scope="session")
def compilation_cache_dir(tmp_path_factory):
    """One persistent compilation cache folder for this test process (an xdist worker)."""
    return str(tmp_path_factory.mktemp("jax_compilation_cache"))


@pytest.fixture(scope="session")
def subprocess_env(compilation_cache_dir):
    """The environment for ``jaxcomp`` commands run as subprocesses: the persistent compilation
    cache of this test process, so a command that compiles what an earlier one (or a ``jit_cache``
    module in this process) compiled (the same model, data and batch size) loads the executables
    instead. The cache holds XLA's compiled programs only; every command still traces, runs and
    computes everything."""
    return dict(os.environ, JAX_COMPILATION_CACHE_DIR=compilation_cache_dir,
                JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")  # fmt: skip


@pytest.fixture(scope="module")
def jit_cache(compilation_cache_dir):
    """The persistent compilation cache on in this process for a module's tests: runs that build
    new jitted functions (a new optimizer, a new ``make_train_step``) of programs compiled before
    load the executables instead of compiling them again; every run still traces and computes
    everything. The settings in force before are restored after."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")  # fmt: skip
    old = {n: getattr(jax.config, n) for n in names}
    for n, v in zip(names, (compilation_cache_dir, 0.0, 0), strict=True):
        jax.config.update(n, v)
    cc.reset_cache()
    yield compilation_cache_dir
    for n, v in old.items():
        jax.config.update(n, v)
    cc.reset_cache()
