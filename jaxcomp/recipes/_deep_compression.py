"""Deep Compression: pruning, trained quantization and Huffman coding, end to end.

The three-stage pipeline of the survey's Figure 1:

1. **Train dense** (or start from given variables).
2. **Prune with retraining**: gradual magnitude pruning (Zhu and Gupta's cubic ramp to each
   layer's target sparsity, masks recomputed every few steps, pruned weights held at zero), then
   retraining at the final masks.
3. **Trained quantization**: k-means weight sharing per layer (linear initialization; exact zeros
   stay out of the clusters), the centroids fine-tuned with the summed gradients of their members.
4. **Encode**: relative-index sparse storage and entropy coding into a ``.jcz`` artifact.

Each stage's test accuracy and size are recorded; the artifact is loaded back and evaluated, so
the reported final accuracy is that of the bytes on disk.

References:
  Han, S., Mao, H., Dally, W. J. "Deep Compression: Compressing deep neural networks with pruning,
  trained quantization and Huffman coding." ICLR 2016. arXiv:1510.00149.

  Han, S., Pool, J., Tran, J., Dally, W. J. "Learning both weights and connections for efficient
  neural networks." NeurIPS 2015. arXiv:1506.02626.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax

from jaxcomp import analysis
from jaxcomp import encode
from jaxcomp import prune
from jaxcomp import quant
from jaxcomp import schedules
from jaxcomp import select
from jaxcomp import train
from jaxcomp.core import _checks as checks
from jaxcomp.core import to_dense
from jaxcomp.data import Dataset
from jaxcomp.errors import CorruptArtifactError

__all__ = [
    "PRESETS",
    "DeepCompression",
    "DeepCompressionResult",
    "deep_compression",
    "load_artifact",
]


@dataclasses.dataclass(frozen=True)
class DeepCompression:
    """The knobs of the Deep Compression recipe.

    Attributes:
      sparsity: ``[(regex, fraction pruned)]`` over kernel paths, first match wins; every kernel
        must be covered (add ``(".*", 0.0)`` to keep the rest dense).
      bits: ``[(regex, index bits)]`` of the k-means codebook per kernel, in [2, 8] (``2**bits``
        entries, one of them the fixed zero of pruned weights); every kernel must be covered.
      dense_epochs: epochs of dense training (skipped when variables are given).
      prune_epochs: epochs over which the sparsity ramps up (gradual pruning).
      retrain_epochs: epochs of retraining at the final masks.
      quant_epochs: epochs of centroid fine-tuning.
      lr: Adam learning rate of dense training and pruning.
      quant_lr: Adam learning rate of centroid fine-tuning.
      batch_size: examples per step.
      mask_every: recompute the masks every this many steps while the sparsity ramps.
      coder: ``"huffman"`` (the paper's) or ``"ans"`` for the artifact's streams.
      seed: fixes initialization, batch order and every random choice.
    """

    sparsity: Sequence[tuple[str, float]]
    bits: Sequence[tuple[str, int]]
    dense_epochs: int = 20
    prune_epochs: int = 10
    retrain_epochs: int = 10
    quant_epochs: int = 5
    lr: float = 1e-3
    quant_lr: float = 1e-4
    batch_size: int = 64
    mask_every: int = 20
    coder: str = "huffman"
    seed: int = 0

    def __post_init__(self) -> None:
        fn = "DeepCompression"
        for name in ("dense_epochs", "prune_epochs", "retrain_epochs", "quant_epochs"):
            checks.integer(getattr(self, name), fn=fn, name=name, low=0)
        for name in ("batch_size", "mask_every"):
            checks.integer(getattr(self, name), fn=fn, name=name)
        for name in ("lr", "quant_lr"):
            checks.number(getattr(self, name), fn=fn, name=name, low=0, low_open=True)
        checks.choice(self.coder, ("huffman", "ans"), fn=fn, name="coder")
        for rx, s in self.sparsity:
            checks.fraction(s, fn=fn, name=f"sparsity of {rx!r}")
        for rx, b in self.bits:  # one of the 2**bits entries is the zero of pruned weights
            checks.bits(b, fn=fn, name=f"bits of {rx!r}", low=2, high=8)

    def replace(self, **changes: Any) -> DeepCompression:
        """A copy with some fields changed (and checked again)."""
        return dataclasses.replace(self, **changes)


PRESETS: dict[str, DeepCompression] = {
    # Han et al. kept 8%, 9% and 26% of LeNet-300-100's weights at 6 bits; on mnist5k 5%, 7% and
    # 20% at 3, 3 and 5 bits lose nothing against the dense baseline (docs/deep_compression.md)
    "lenet300": DeepCompression(
        sparsity=[("Dense_0", 0.95), ("Dense_1", 0.93), ("Dense_2", 0.8)],
        bits=[("Dense_2", 5), ("Dense", 3)],
    ),
    # ... and 66%, 12%, 8% and 19% of LeNet-5's; here 66%, 10%, 4% and 15%, at 5, 5, 3, 5 bits
    "lenet5": DeepCompression(
        sparsity=[("Conv_0", 0.34), ("Conv_1", 0.9), ("Dense_0", 0.96), ("Dense_1", 0.85)],
        bits=[("Conv", 5), ("Dense_1", 5), ("Dense", 3)],
    ),
}


@dataclasses.dataclass
class DeepCompressionResult:
    """What :func:`deep_compression` produced.

    Attributes:
      stages: one record per stage: ``stage``, ``test_accuracy``, ``bytes`` (the model's size after
        that stage: float32 dense, float32 of the kept weights plus indices, and the artifact).
      final_params: the finalized params (codebook nodes for shared kernels).
      artifact: the artifact's bytes: ``{"params": final_params, **collections}`` packed.
      report: :func:`jaxcomp.encode.report` of the artifact.
      baseline_accuracy, final_accuracy: dense and artifact test accuracy.
    """

    stages: list[dict[str, Any]]
    final_params: Any
    artifact: bytes
    report: dict[str, Any]
    baseline_accuracy: float
    final_accuracy: float


def _state(model: Any, variables: dict[str, Any], tx: Any, key: Any, transform: Any = None):
    return train.TrainState.create(
        apply_fn=model.apply, variables=variables, tx=tx, key=key, transform=transform
    )


def _fit(state, data, cfg: DeepCompression, epochs: int, progress: bool, label: str):
    """Trains for ``epochs``; returns the state and its test accuracy (fit evaluates at the end)."""
    if epochs == 0:
        return state, _accuracy(state, data)
    bs = min(cfg.batch_size, data.num_train)
    res = train.fit(
        state, data, batch_size=bs, epochs=epochs, seed=cfg.seed, progress=progress,
        description=label, eval_every=10**9,
    )  # fmt: skip
    return res.state, res.history[-1]["test_accuracy"]


def _accuracy(state, data) -> float:
    return train.evaluate(state, data.x_test, data.y_test)["accuracy"]


def load_artifact(blob_or_path: bytes | str | os.PathLike[str]) -> tuple[dict[str, Any], dict]:
    """Loads a ``.jcz`` written by :func:`deep_compression` (bytes or a path).

    Returns:
      ``(variables, metadata)``: the model's variables with dense params (codebooks expanded),
      ready for ``model.apply``, and the artifact's metadata.

    Raises:
      CorruptArtifactError: the artifact is damaged or is not a model's variables.
    """
    if isinstance(blob_or_path, bytes | bytearray | memoryview):
        tree, meta = encode.unpack(bytes(blob_or_path))
    else:
        tree, meta = encode.load(blob_or_path)
    if not isinstance(tree, dict) or "params" not in tree:
        raise CorruptArtifactError("the artifact does not hold model variables (no 'params')")
    return jax.tree.map(np.asarray, to_dense(tree)), meta


def deep_compression(
    model: Any,
    data: Dataset,
    config: DeepCompression,
    *,
    variables: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> DeepCompressionResult:
    """Runs the Deep Compression pipeline on ``model`` and ``data``.

    Args:
      model: a ``flax.linen`` module taking ``(x, train=...)``.
      data: the dataset (trained on its train split, evaluated on its test split).
      config: the recipe's knobs (see :data:`PRESETS`).
      variables: trained variables to start from; the dense stage is skipped when given.
      metadata: extra JSON metadata stored in the artifact (model name, input shape...).
      progress: show progress bars.
      log: called with one line per finished stage.

    Returns:
      A :class:`DeepCompressionResult`.

    Raises:
      SelectionError: a sparsity or bits rule matches no kernel, or a kernel is not covered.
    """
    log = log or (lambda line: None)
    key = jax.random.key(config.seed)
    k_init, k_dense, k_prune, k_quant = jax.random.split(key, 4)
    stages: list[dict[str, Any]] = []

    # 1. dense
    if variables is None:
        variables = model.init(k_init, np.zeros((1, *data.input_shape), np.float32), train=False)
        st, acc = _fit(_state(model, variables, optax.adam(config.lr), k_dense), data, config,
                       config.dense_epochs, progress, "1/3 dense")  # fmt: skip
        variables = st.variables()
    else:
        acc = _accuracy(_state(model, variables, optax.identity(), k_dense), data)
    dense_params = variables["params"]
    dense_bytes = int(analysis.size_bytes(dense_params, bits=32))
    baseline = acc
    stages.append({"stage": "dense", "test_accuracy": acc, "bytes": dense_bytes,
                   "nonzeros": analysis.nonzero_count(dense_params)})  # fmt: skip
    log(f"dense: test accuracy {acc:.4f}, {dense_bytes:,} bytes")

    # 2. gradual pruning (every kernel's own cubic ramp), then retraining at the final masks
    steps_per_epoch = data.num_train // min(config.batch_size, data.num_train)
    ramp_end = max(1, config.prune_epochs * steps_per_epoch)
    ramps = [(rx, schedules.polynomial(0.0, float(s), begin=0, end=ramp_end))
             for rx, s in config.sparsity]  # fmt: skip
    pruner = prune.magnitude(sparsity=ramps, where=select.kernels(), update_every=config.mask_every)
    st = _state(model, variables, optax.adam(config.lr), k_prune, pruner)
    # the accuracy fit reports is that of mask * weights, which finalize bakes
    st, acc = _fit(st, data, config, config.prune_epochs + config.retrain_epochs, progress,
                   "2/3 prune")  # fmt: skip
    pruned = st.finalize()
    variables = {"params": pruned, **st.model_state}
    nnz = analysis.nonzero_count(pruned)
    # the paper's accounting before quantization: 32-bit values plus 5/8-bit relative indices
    pruned_bytes = len(encode.pack(pruned, coder="raw", sparse=True))
    stages.append({"stage": "pruned", "test_accuracy": acc, "bytes": pruned_bytes,
                   "nonzeros": nnz})  # fmt: skip
    log(f"pruned: test accuracy {acc:.4f}, {nnz:,} nonzeros")

    # 3. trained quantization: k-means per layer at its own bits, centroids fine-tuned
    quantizer = quant.kmeans(bits=list(config.bits), where=select.kernels())
    st = _state(model, variables, optax.adam(config.quant_lr), k_quant, quantizer)
    st, _ = _fit(st, data, config, config.quant_epochs, progress, "3/3 quantize")
    final = st.finalize()

    # 4. encode, then load back and evaluate the bytes on disk
    meta = dict(metadata or {})
    meta.update({"recipe": "deep-compression", "baseline_accuracy": baseline})
    blob = encode.pack(
        {"params": final, **st.model_state}, metadata=meta, coder=config.coder,
        dense_bytes=dense_bytes,
    )  # fmt: skip
    final_vars, _ = load_artifact(blob)
    loaded = final_vars["params"]
    final_acc = _accuracy(_state(model, final_vars, optax.identity(), k_quant), data)
    stages.append({"stage": "quantized+coded", "test_accuracy": final_acc, "bytes": len(blob),
                   "nonzeros": analysis.nonzero_count(loaded)})  # fmt: skip
    log(f"quantized and coded: test accuracy {final_acc:.4f}, {len(blob):,} bytes "
        f"({dense_bytes / len(blob):.1f}x)")  # fmt: skip
    return DeepCompressionResult(
        stages=stages,
        final_params=final,
        artifact=blob,
        report=encode.report(blob, dense_bytes=dense_bytes),
        baseline_accuracy=baseline,
        final_accuracy=final_acc,
    )
