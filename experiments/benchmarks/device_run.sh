#!/usr/bin/env bash
# Runs the speed benchmarks of issues 4 and 6 (and the GPU-relevant tests) on an accelerator
# machine in one call, each step under its own time limit, and writes every JSON and log to
# $OUT (default out/device); SMOKE=1 runs every benchmark at toy size, STEPS="a b" only those
# steps. Usage, from the repository root:
#   bash experiments/benchmarks/device_run.sh [python]
# The benchmarks themselves are plain `python -m experiments.benchmarks.NAME` runs; this script
# only orders them by importance and bounds each one, so that one slow step cannot eat the rest.
set -u
PY=${1:-python3}
OUT=${OUT:-out/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD
"$PY" -c "import jax, flax, optax, numpy; print('jax', jax.__version__, 'flax', flax.__version__,
'optax', optax.__version__, 'numpy', numpy.__version__, jax.devices())" 2>&1 | tee "$OUT/versions.txt"
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,utilization.gpu --format=csv 2>&1 | tee -a "$OUT/versions.txt"

step() {  # step NAME SECONDS python-args...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$PY" "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "== $name: rc=$? in $((SECONDS - t0)) s"
  grep -v "^\s*$" "$OUT/$name.log" | tail -n 4
}

STEPS=${STEPS:-lowrank_speed_x32 lowrank_speed_x32_slices qat_overhead int8_inference tests_gpu}
for name in $STEPS; do
  case $name in
  lowrank_speed_x32)  # batch x32, 20 calls per timed sample: device time, not launch round trips
    step $name 140 -m experiments.benchmarks.lowrank_speed --scale 32 --repeats 30 --trials 2 \
      --pipeline 20 ${SMOKE:+--smoke} ;;
  lowrank_speed_x32_slices)  # the depthwise kinds with shifted slices instead of grouped convs
    step $name 100 -m experiments.benchmarks.lowrank_speed --scale 32 --repeats 30 --trials 2 \
      --pipeline 20 --depthwise slices ${SMOKE:+--smoke} \
      --only conv_cp,conv_separable_basis,conv5x5_separable_basis,conv_monochromatic ;;
  qat_overhead) step $name 140 -m experiments.benchmarks.qat_overhead --pipeline 10 ${SMOKE:+--smoke} ;;
  int8_inference) step $name 80 -m experiments.benchmarks.int8_inference --pipeline 10 \
    ${SMOKE:+--smoke} ;;
  tests_gpu)  # the integer and factorized paths, in full float32 (GPUs default to TF32);
    # compile-bound: ~3 min on an H100
    JAX_DEFAULT_MATMUL_PRECISION=highest step $name 240 -m pytest -q -rf -p no:cacheprovider \
      tests/test_quant_adapters.py tests/test_lowrank.py ;;
  *) echo "unknown step $name" ;;
  esac
done

"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(name):
    try:
        return json.loads((out / f"{name}.json").read_text())
    except Exception as e:  # a step that failed or timed out: say so, go on
        print(f"{name}: no result ({type(e).__name__})")
for name in ("lowrank_speed_x32", "lowrank_speed_x32_slices"):
    r = load(name)
    if r:
        print(name, r["machine"]["device"], "precision", r.get("default_matmul_precision"))
        for k in r["results"]:
            print(f"  {k['kind']:26s} dense {k['dense_ms']:8.4f} ms  fact {k['factored_ms']:8.4f} ms"
                  f"  theo {k['theoretical_speedup']:6.2f}  meas {k['measured_speedup']:6.2f}"
                  f"  eff {k['efficiency']:.3f}")
for name in ("qat_overhead", "int8_inference"):
    r = load(name)
    if r:
        for case in ("mlp", "lenet5"):
            if case in r:
                print(name, case, {k: (v.get("ratio"), v.get("median_ms")) for k, v in r[case].items()
                                   if isinstance(v, dict)})
PYEOF
