"""Structured pruning end to end: channels removed for real, fine-tuned, measured, stored.

1. **Train dense** (or start from given variables).
2. **Prune channels with fine-tuning**: :func:`jaxcomp.structured.channels` over the model's
   dependency groups (traced from its jaxpr), the per-group ratio that removes ``flops`` of the
   FLOPs (:func:`jaxcomp.structured.ratio_for_flops`) reached by a linear ramp over
   ``prune_epochs``, then ``finetune_epochs`` at the final masks.
3. **Remove them**: ``finalize`` gives the smaller arrays; the artifact stores them with the kept
   positions (:class:`jaxcomp.structured.ChannelPruned`). It is loaded back, checked against the
   masked model on test inputs, and evaluated: the reported accuracy is that of the smaller model
   on disk, run by the unchanged model code (:func:`jaxcomp.structured.small`).
4. **Measure**: FLOPs and parameters of both models, and their latency at batch 128 and at batch 1,
   interleaved in one run (:func:`jaxcomp.analysis.compare_latency`).

References:
    Li, Kadav, Durdanovic, Samet and Graf, "Pruning filters for efficient ConvNets", ICLR 2017,
    arXiv:1608.08710 [33] (L1 filter pruning with retraining).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxcomp import analysis
from jaxcomp import encode
from jaxcomp import prune
from jaxcomp import schedules
from jaxcomp import structured as st_
from jaxcomp import train
from jaxcomp.core import _checks as checks
from jaxcomp.core._tree import path_str
from jaxcomp.data import Dataset
from jaxcomp.errors import CorruptArtifactError

__all__ = ["Structured", "StructuredResult", "load_small", "structured"]

_FN = "Structured"
CRITERIA = (*st_.CRITERIA, "lasso")
LASSO_EXAMPLES = 256
"""Training examples that LASSO selection reads (the paper samples a few thousand locations)."""


@dataclasses.dataclass(frozen=True)
class Structured:
    """The knobs of the structured pruning recipe.

    Attributes:
        flops: the fraction of the dense model's FLOPs to remove, in [0, 1).
        criterion: ``"l1"``, ``"l2"``, ``"bn"``, ``"taylor"`` (see :mod:`jaxcomp.structured`),
            or ``"lasso"``: He et al.'s LASSO selection with least-squares reconstruction of each
            group's reader, once after dense training, then ``finetune_epochs`` at those masks
            (groups read by several layers, such as a residual stream, by the L1 norm).
        dense_epochs: epochs of dense training (skipped when variables are given).
        prune_epochs: epochs over which the removed fraction ramps up.
        finetune_epochs: epochs of fine-tuning at the final masks.
        lr: Adam learning rate.
        batch_size: examples per step.
        mask_every: recompute the masks every this many steps while they ramp.
        round_to: keep a multiple of this many channels in every group (default 8: XLA's CPU
            convolutions lose most of the speed-up at other widths; 1 for exact ratios). The
            ``lasso`` criterion keeps exact ratios.
        seed: fixes initialization, batch order and every random choice.
    """

    flops: float = 0.5
    criterion: str = "l1"
    dense_epochs: int = 10
    prune_epochs: int = 3
    finetune_epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 64
    mask_every: int = 20
    round_to: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        checks.fraction(self.flops, fn=_FN, name="flops")
        checks.choice(self.criterion, CRITERIA, fn=_FN, name="criterion")
        for name in ("dense_epochs", "prune_epochs", "finetune_epochs", "seed"):
            checks.integer(getattr(self, name), fn=_FN, name=name, low=0)
        checks.integer(self.batch_size, fn=_FN, name="batch_size")
        checks.integer(self.mask_every, fn=_FN, name="mask_every")
        checks.integer(self.round_to, fn=_FN, name="round_to")
        checks.number(self.lr, fn=_FN, name="lr", low=0.0, low_open=True)

    def replace(self, **changes: Any) -> Structured:
        """A copy with ``changes`` (checked again)."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class StructuredResult:
    """What :func:`structured` returns: the artifact, the report and the stages."""

    artifact: bytes
    report: dict[str, Any]
    stages: list[dict[str, Any]]


def _fit(state, data, cfg: Structured, epochs: int, progress: bool, label: str):
    if epochs == 0:
        return state, train.evaluate(state, data.x_test, data.y_test)["accuracy"]
    res = train.fit(
        state, data, batch_size=min(cfg.batch_size, data.num_train), epochs=epochs,
        seed=cfg.seed, progress=progress, description=label, eval_every=10**9,
    )  # fmt: skip
    return res.state, res.history[-1]["test_accuracy"]


def accuracy(apply_fn: Callable, variables: Any, x: Any, y: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``apply_fn(variables, x)`` over ``(x, y)``, one jitted call per batch."""
    fn = jax.jit(lambda v, xb: jnp.argmax(apply_fn(v, xb), axis=-1))
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int(
            np.sum(np.asarray(fn(variables, x[i : i + batch_size])) == y[i : i + batch_size])
        )
    return correct / len(x)


def load_small(model: Any, blob_or_path: Any, input_shape: tuple[int, ...]):
    """``(small_apply_fn, small_variables, metadata)`` of a structured artifact (bytes or path).

    Raises:
        CorruptArtifactError: the artifact is damaged or holds no model variables.
        WidthMismatchError: its widths do not fit ``model``.
    """
    if isinstance(blob_or_path, bytes | bytearray | memoryview):
        tree, meta = encode.unpack(bytes(blob_or_path))
    else:
        tree, meta = encode.load(blob_or_path)
    if not isinstance(tree, dict) or "params" not in tree:
        raise CorruptArtifactError("the artifact does not hold model variables (no 'params')")
    x = jnp.zeros((1, *input_shape), jnp.float32)
    small_apply, small = st_.small(lambda v, x_: model.apply(v, x_), tree, x)
    return small_apply, small, meta


def _widths(final_params: Any) -> list[dict[str, Any]]:
    rows = []
    for p, leaf in jax.tree_util.tree_flatten_with_path(
        final_params, is_leaf=lambda n: isinstance(n, st_.ChannelPruned)
    )[0]:
        path = path_str(p)
        if not path.endswith("kernel"):
            continue
        shape = leaf.shape if isinstance(leaf, st_.ChannelPruned) else np.shape(leaf)
        small = np.shape(leaf.values) if isinstance(leaf, st_.ChannelPruned) else shape
        rows.append({"layer": path.rsplit("/", 1)[0], "dense_width": int(shape[-1]),
                     "width": int(small[-1]), "dense_inputs": int(shape[-2]),
                     "inputs": int(small[-2])})  # fmt: skip
    return rows


def _lasso_masks(apply_fn, variables, data: Dataset, groups, ratio: float):
    """LASSO selection and least-squares refit for the groups with one reader; the L1 norm of
    the filters for the others (a residual stream is read by several layers)."""
    one_reader = [i for i, g in enumerate(groups)
                  if sum(m.role == "in" for m in g.members) == 1]  # fmt: skip
    x = jnp.asarray(data.x_train[: min(LASSO_EXAMPLES, data.num_train)])
    lasso, variables = st_.lasso_channels(apply_fn, variables, x, one_reader, ratio=ratio,
                                          groups=groups)  # fmt: skip
    l1 = st_.masks(apply_fn, variables, x, ratio=ratio, groups=groups)
    keep = [a if i in one_reader else b for i, (a, b) in enumerate(zip(lasso.keep, l1.keep))]
    return st_.Masks(keep, groups), variables


def structured(
    model: Any,
    data: Dataset,
    config: Structured,
    *,
    variables: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    latency_repeats: int = 30,
) -> StructuredResult:
    """Runs the structured pruning recipe on ``model`` and ``data`` (see the module docstring).

    Args:
        model: a ``flax.linen`` module taking ``(x, train=...)``.
        data: the dataset (trained on its train split, evaluated on its test split).
        config: the knobs.
        variables: trained variables to start from; the dense stage is skipped when given.
        metadata: extra JSON metadata stored in the artifact.
        progress: show progress bars.
        log: called with one line per finished stage.
        latency_repeats: timed calls of each model per batch size.

    Returns:
        A :class:`StructuredResult`; its report has ``baseline_accuracy``, ``masked_accuracy``,
        ``final_accuracy`` (of the smaller model loaded from the artifact), ``dense_flops``,
        ``flops``, ``flops_ratio``, ``params``, ``dense_params``, ``params_ratio``,
        ``measured_speedup`` (batch 128), ``measured_speedup_batch1``, ``latency_ms`` and
        ``widths`` per layer.

    Raises:
        ValueError: a FLOPs budget that only removing whole groups could meet.
    """
    log = log or (lambda line: None)
    k_init, k_dense, k_prune = jax.random.split(jax.random.key(config.seed), 3)
    stages: list[dict[str, Any]] = []
    x1 = jnp.zeros((1, *data.input_shape), jnp.float32)
    apply_fn = lambda v, x: model.apply(v, x)  # inference mode: running batch statistics

    start = model.init(k_init, x1, train=False) if variables is None else variables
    # the groups and the ratio depend on shapes alone: check the budget and the criterion before
    # any training, so that a bad request fails in seconds
    groups = st_.groups(apply_fn, start, x1)
    round_to = 1 if config.criterion == "lasso" else config.round_to
    ratio = st_.ratio_for_flops(apply_fn, start, x1, flops=config.flops, groups=groups,
                                round_to=round_to)  # fmt: skip
    if config.criterion not in ("taylor", "lasso"):
        st_.scores(groups, start, criterion=config.criterion)
    if variables is None:
        variables = start
        state = train.TrainState.create(apply_fn=model.apply, variables=variables,
                                        tx=optax.adam(config.lr), key=k_dense)  # fmt: skip
        state, baseline = _fit(state, data, config, config.dense_epochs, progress, "1/2 dense")
        variables = state.variables()
    else:
        baseline = accuracy(apply_fn, variables, data.x_test, data.y_test)
    dense_flops = analysis.flops(apply_fn, variables, x1)
    dense_params = analysis.param_count(variables["params"])
    stages.append({"stage": "dense", "test_accuracy": baseline, "flops": dense_flops,
                   "params": dense_params})  # fmt: skip
    log(f"dense: test accuracy {baseline:.4f}, {dense_flops:,} MACs")

    if config.criterion == "lasso":
        masks, variables = _lasso_masks(apply_fn, variables, data, groups, ratio)
        ones = jax.tree.map(jnp.ones_like, variables["params"])
        keep = jax.tree.map(lambda m: m != 0, st_.apply_masks(ones, masks))
        transform = prune.fixed_masks(keep)  # fine-tune the kept channels, removed ones at zero
        epochs = config.finetune_epochs
    else:
        steps_per_epoch = max(1, data.num_train // min(config.batch_size, data.num_train))
        end = max(1, config.prune_epochs * steps_per_epoch)
        ramp = schedules.linear(0.0, ratio, begin=0, end=end)
        transform = st_.channels(apply_fn, variables, x1, ratio=ramp, criterion=config.criterion,
                                 update_every=config.mask_every, round_to=round_to,
                                 groups=groups)  # fmt: skip
        epochs = config.prune_epochs + config.finetune_epochs
    state = train.TrainState.create(apply_fn=model.apply, variables=variables,
                                    tx=optax.adam(config.lr), key=k_prune,
                                    transform=transform)  # fmt: skip
    state, masked_acc = _fit(state, data, config, epochs, progress, "2/2 prune channels")
    final = state.finalize()
    if config.criterion == "lasso":
        final = st_.remove_channels(final, masks)
    masked_vars = {"params": state.params, **state.model_state}
    stages.append({"stage": "masked", "test_accuracy": masked_acc, "flops": dense_flops,
                   "params": dense_params})  # fmt: skip

    meta = dict(metadata or {})
    meta.update({"recipe": "structured", "baseline_accuracy": baseline,
                 "criterion": config.criterion, "flops_removed": config.flops,
                 "round_to": round_to})  # fmt: skip
    blob = encode.pack({"params": final, **state.model_state}, metadata=meta, coder="raw")
    small_apply, small, _ = load_small(model, blob, data.input_shape)
    probe = jnp.asarray(data.x_test[:64])
    want = apply_fn(masked_vars, probe)
    got = jax.jit(small_apply)(small, probe)
    scale = float(jnp.max(jnp.abs(want))) or 1.0
    if not np.allclose(got, want, rtol=1e-4, atol=1e-4 * scale):  # never report a wrong model
        raise RuntimeError(
            "the smaller model's outputs differ from the masked model's by "
            f"{float(jnp.max(jnp.abs(got - want))):.3g}; please report this model"
        )
    final_acc = accuracy(small_apply, small, data.x_test, data.y_test)
    flops = analysis.flops(small_apply, small, x1)
    params = analysis.param_count(small["params"])
    stages.append({"stage": "small", "test_accuracy": final_acc, "flops": flops,
                   "params": params})  # fmt: skip

    latency = {}
    for batch in (128, 1):
        xb = jnp.asarray(np.resize(data.x_test, (batch, *data.input_shape)))
        fns = {"dense": lambda xb_: apply_fn(variables, xb_),
               "small": lambda xb_: small_apply(small, xb_)}  # fmt: skip
        timed = analysis.compare_latency(fns, xb, repeats=latency_repeats, warmup=2, rounds=5)
        latency[batch] = {k: 1e3 * v["median_s"] for k, v in timed.items()}
    speedup = latency[128]["dense"] / latency[128]["small"]
    log(f"small: test accuracy {final_acc:.4f}, {flops:,} MACs ({flops / dense_flops:.2f} of "
        f"dense), {speedup:.2f}x faster at batch 128")  # fmt: skip
    report = {
        "baseline_accuracy": baseline,
        "masked_accuracy": masked_acc,
        "final_accuracy": final_acc,
        "accuracy_change_pp": 100 * (final_acc - baseline),
        "criterion": config.criterion,
        "flops_target": config.flops,
        "ratio": ratio,
        "dense_flops": dense_flops,
        "flops": flops,
        "flops_ratio": flops / dense_flops,
        "dense_params": dense_params,
        "params": params,
        "params_ratio": params / dense_params,
        "latency_ms": {"batch_128": latency[128], "batch_1": latency[1]},
        "measured_speedup": speedup,
        "measured_speedup_batch1": latency[1]["dense"] / latency[1]["small"],
        "groups": len(groups),
        "widths": _widths(final),
        "artifact_bytes": len(blob),
    }
    return StructuredResult(artifact=blob, report=report, stages=stages)
