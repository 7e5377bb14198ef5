"""Net2Net on mnist5k: function-preserving growth, then training against the same net from scratch.

Chen, Goodfellow and Shlens (ICLR 2016, arXiv:1511.05641) grow a trained *teacher* into a wider
(Net2WiderNet) or deeper (Net2DeeperNet) *student* whose initial function is the teacher's, so
that the student starts at the teacher's accuracy and "the student network learns faster than
the same network trained from random initialization" (their claims: the transforms preserve the
function, and they accelerate training of the larger network).

Two teachers, each trained for 8 epochs (Adam 1e-3, batch 64), one per seed:

* dense: ``MLP(features=(64,))`` (784-64-10); students ``MLP((128,))`` by
  ``jc.distill.wider(..., "Dense_0", "Dense_1", 128)`` and ``MLP((64, 64))`` by
  ``jc.distill.deeper(..., "Dense_0")``;
* conv: ``ConvNet(features=(4, 8), hidden=(32,))`` (LeNet-5's geometry); students
  ``ConvNet((8, 16), (32,))`` by widening ``Conv_0`` (into ``Conv_1``) and then ``Conv_1`` (into
  the flattened ``Dense_0``), and ``ConvNet((4, 8), (32, 32))`` by deepening ``Dense_0``.

Widening uses ``noise=0.05`` (zero-sum within each group of replicas: the function is kept
exactly, but the replicas' gradients differ; without it they stay copies). Each student is trained
for 4 epochs (248 steps) from its Net2Net initialization and, as the baseline, from a random
initialization, with the same optimizer and batch order; the test accuracy is logged every 31
steps and at step 0. Reported over 3 seeds: the teacher's accuracy and the student's at step 0
(and the largest logit difference, the function preservation), the accuracy after 31 steps
(half an epoch) and at the end, the steps until the teacher's accuracy is reached, and the CPU
latency at batch 1 and 128 of teacher and students (interleaved, seed 0's models: Net2Net makes
models larger, it does not compress).

Run ``python -m experiments.distillation.net2net [--smoke] [--seeds N] [--out DIR]`` (about 6
minutes on 2 shared cores).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

import jaxcomp as jc
from experiments.common import EVAL_STEP
from experiments.common import adam
from experiments.lowrank._posthoc import STEP
from experiments.lowrank._posthoc import jitted
from experiments.lowrank._posthoc import over_seeds
from experiments.lowrank._posthoc import pm
from experiments.lowrank._posthoc import subset
from experiments.lowrank._posthoc import train_fresh
from experiments.report import interleaved_latency
from experiments.report import summary_row
from experiments.report import write_doc
from jaxcomp import distill

COMMAND = "python -m experiments.distillation.net2net"
CLAIM = ("Chen et al.: Net2WiderNet/Net2DeeperNet students compute the teacher's function at "
         "initialization and learn faster than the same network trained from random "
         "initialization")  # fmt: skip


def pairs(smoke: bool) -> dict[str, dict[str, Any]]:
    """Per pair: the teacher, and per student its model and how to grow the teacher's params."""
    if smoke:
        mlp_w, conv_f, hid = 8, (2, 4), 8
    else:
        mlp_w, conv_f, hid = 64, (4, 8), 32
    wide_f = tuple(2 * f for f in conv_f)

    def widen_conv(p, key):
        k0, k1 = jax.random.split(key)
        p = distill.wider(p, "Conv_0", "Conv_1", wide_f[0], key=k0, noise=0.05)
        return distill.wider(p, "Conv_1", "Dense_0", wide_f[1], key=k1, noise=0.05)

    return {
        "dense": {
            "teacher": distill.MLP(features=(mlp_w,)),
            "students": {
                "wider": (distill.MLP(features=(2 * mlp_w,)), lambda p, key: distill.wider(
                    p, "Dense_0", "Dense_1", 2 * mlp_w, key=key, noise=0.05)),
                "deeper": (distill.MLP(features=(mlp_w, mlp_w)),
                           lambda p, key: distill.deeper(p, "Dense_0")),
            },
        },
        "conv": {
            "teacher": distill.ConvNet(features=conv_f, hidden=(hid,)),
            "students": {
                "wider": (distill.ConvNet(features=wide_f, hidden=(hid,)), widen_conv),
                "deeper": (distill.ConvNet(features=conv_f, hidden=(hid, hid)),
                           lambda p, key: distill.deeper(p, "Dense_0")),
            },
        },
    }  # fmt: skip


def curve(model: Any, variables: Any, data: jc.data.Dataset, *, steps: int, every: int,
          seed: int) -> tuple[list[tuple[int, float]], Any]:  # fmt: skip
    """Test accuracy at step 0 and every ``every`` steps of training from ``variables``."""
    state = jc.train.TrainState.create(apply_fn=model.apply, variables=variables, tx=adam(1e-3),
                                       key=jax.random.key(seed))  # fmt: skip
    acc0 = jc.train.evaluate(state, data.x_test, data.y_test, eval_step=EVAL_STEP)["accuracy"]
    res = jc.train.fit(state, data, batch_size=64, steps=steps, seed=seed, progress=False,
                       eval_every=every, train_step=STEP, eval_step=EVAL_STEP)  # fmt: skip
    return [(0, acc0)] + [(h["step"], h["test_accuracy"]) for h in res.history], res.state


def steps_to(points: list[tuple[int, float]], target: float) -> int | None:
    """The first logged step whose accuracy reaches ``target`` (None if none does)."""
    return next((s for s, a in points if a >= target), None)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="toy size, one seed (the test)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="docs/results/distillation")
    args = ap.parse_args(argv)
    t0 = time.time()
    log = lambda m: print(f"[{time.time() - t0:6.0f}s] {m}", flush=True)
    data = jc.data.load("mnist5k")
    teacher_epochs, steps, every = 8, 248, 31
    seeds, reps = list(range(args.seeds)), {1: 300, 128: 50}
    if args.smoke:
        data, teacher_epochs, steps, every = subset(data, 128, 64), 1, 4, 2
        seeds, reps = [0], {1: 2, 128: 2}
    rows, summary, curves, lat_all = [], [], {}, {}
    for pair, cfg in pairs(args.smoke).items():
        if args.smoke and pair == "dense":  # the smoke: the conv pair's widening (the test)
            continue
        teacher = cfg["teacher"]
        t_acc, stats = [], {s: {"gap": [], "n2n": [], "scratch": []}
                            for s in cfg["students"]}  # fmt: skip
        keep: dict[str, Any] = {}
        if args.smoke:
            cfg = {**cfg, "students": {"wider": cfg["students"]["wider"]}}
            stats = {"wider": stats["wider"]}
        for seed in seeds:
            tv, acc = train_fresh(teacher, data, epochs=teacher_epochs, seed=seed)
            t_acc.append(acc)
            t_logits = jitted(teacher)(tv, jnp.asarray(data.x_test))
            log(f"{pair} seed {seed}: teacher {acc:.4f}")
            if seed == seeds[0]:
                keep["teacher"] = (jitted(teacher), tv)
            for name, (student, grow) in cfg["students"].items():
                sv = {"params": grow(tv["params"], jax.random.key(100 + seed))}
                s_logits = jitted(student)(sv, jnp.asarray(data.x_test))
                gap = float(jnp.max(jnp.abs(s_logits - t_logits)))
                n2n, fin = curve(student, sv, data, steps=steps, every=every, seed=seed)
                rv = jc.models.init(student, jax.random.key(seed), data.input_shape)
                scr, _ = curve(student, rv, data, steps=steps, every=every, seed=seed)
                stats[name]["gap"].append(gap)
                stats[name]["n2n"].append(n2n)
                stats[name]["scratch"].append(scr)
                log(
                    f"{pair} seed {seed}: {name}: step 0 {n2n[0][1]:.4f} (max |logit diff| "
                    f"{gap:.2e}), end {n2n[-1][1]:.4f}; scratch end {scr[-1][1]:.4f}"
                )
                if seed == seeds[0]:
                    keep[name] = (jitted(student), fin.variables())
        lat = interleaved_latency(keep, data.x_test, repeats=reps, skip=args.smoke)
        lat_all[pair] = lat
        log(f"{pair} latency: {lat}")
        tacc = over_seeds(t_acc)
        tv0 = keep["teacher"][1]
        t_params = int(jc.analysis.param_count(tv0["params"]))
        x1 = jnp.asarray(data.x_test[:1])
        t_macs = int(jc.analysis.flops(keep["teacher"][0], tv0, x1))
        rows.append({"pair": pair, "model": "teacher", "init": "", "acc_step0": "",
                     "acc_half_epoch": "", "acc_end": pm(tacc), "steps_to_teacher": "",
                     "max_logit_diff": "", "params": t_params, "macs": t_macs,
                     "ms_b1": lat["teacher"]["b1"], "ms_b128": lat["teacher"]["b128"]})  # fmt: skip
        curves[pair] = {}
        for name, s in stats.items():
            fn, v = keep[name]
            params = int(jc.analysis.param_count(v["params"]))
            macs = int(jc.analysis.flops(fn, v, x1))
            per = {}
            for init in ("n2n", "scratch"):
                pts = s[init]
                reach = [steps_to(p, ta) for p, ta in zip(pts, t_acc)]
                per[init] = {
                    "step0": over_seeds([p[0][1] for p in pts]),
                    "half": over_seeds([p[1][1] for p in pts]),
                    "end": over_seeds([p[-1][1] for p in pts]), "reach": reach,
                }  # fmt: skip
                rows.append({
                    "pair": pair, "model": name, "init": "Net2Net" if init == "n2n"
                    else "random", "acc_step0": pm(per[init]["step0"]),
                    "acc_half_epoch": pm(per[init]["half"]), "acc_end": pm(per[init]["end"]),
                    "steps_to_teacher": ", ".join("-" if r is None else str(r) for r in reach),
                    "max_logit_diff": f"{max(s['gap']):.1e}" if init == "n2n" else "",
                    "params": params, "macs": macs, "ms_b1": lat[name]["b1"],
                    "ms_b128": lat[name]["b128"],
                })  # fmt: skip
            curves[pair][name] = {i: s[i] for i in ("n2n", "scratch")}
            n, r = per["n2n"], per["scratch"]
            summary.append(summary_row(
                ref="[49]", method=f"Net2{name.capitalize()}Net, then {steps} steps",
                model=f"{pair} teacher {t_params} params -> student {params}", data=data.name,
                acc_before=tacc["mean"], acc_before_std=tacc["std"],
                acc_after=n["end"]["mean"], acc_after_std=n["end"]["std"], seeds=len(seeds),
                params_before=t_params, params_after=params, flops_before=t_macs,
                flops_after=macs, latency_ms_b1=lat[name]["b1"],
                latency_ms_b128=lat[name]["b128"], latency_ms_b1_before=lat["teacher"]["b1"],
                latency_ms_b128_before=lat["teacher"]["b128"], command=COMMAND,
                note=f"claim: {CLAIM}; measured: step 0 {n['step0']['mean']:.4f} (teacher "
                f"{tacc['mean']:.4f}, max |logit diff| {max(s['gap']):.1e}), after {every} steps "
                f"{n['half']['mean']:.4f} vs {r['half']['mean']:.4f} from random init, after "
                f"{steps} steps {n['end']['mean']:.4f} vs {r['end']['mean']:.4f}",
            ))  # fmt: skip
    meta = {"dataset": data.name, "seeds": seeds, "teacher_epochs": teacher_epochs,
            "student_steps": steps, "eval_every": every, "optimizer": "adam 1e-3, batch 64",
            "claim": CLAIM, "smoke": args.smoke, "command": COMMAND, "curves": curves,
            "seconds": round(time.time() - t0, 1)}  # fmt: skip
    cols = ["pair", "model", "init", "acc_step0", "acc_half_epoch", "acc_end",
            "steps_to_teacher", "max_logit_diff", "params", "macs", "ms_b1", "ms_b128"]  # fmt: skip
    md = write_doc(args.out, "net2net", {"meta": meta, "rows": rows, "summary": summary},
                   [("Net2Net on mnist5k", rows, cols)])  # fmt: skip
    print(md)
    log("done")
    return {"rows": rows, "summary": summary, "meta": meta}


if __name__ == "__main__":
    main()
