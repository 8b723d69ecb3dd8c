#!/usr/bin/env bash
# Every GPU check and benchmark in one run, each part under its own time limit:
#   OUT=results bash tools/gpu_suite.sh [parts...]   parts: tests demo eval build draft mesh train train2 decode
#   (default: tests demo train; each call must fit 10 minutes: on two GPUs run `mesh` and `train2`
#   in separate calls, as each may take most of one)
# tests   the GPU-only tests (tests/test_gpu.py) and the demo decode with the bundled checkpoints
# eval    the README's demo evaluations, 300 problems each: temperature 1 with every mode (each
#         problem timed 3 times), then greedy; their tables in $OUT/eval_t1.txt and eval_greedy.txt
# build   tools/build_demo.py --install: rebuild the bundled demo model; $OUT/assets.tar holds it
# draft   the same with the shipped target kept: rebuild only the draft
# mesh    tools/bench_mesh.py: Qwen3-8B shape, 1 device vs tensor=2 / data=2 (needs 2 GPUs for the mesh rows)
# train   tools/bench_train.py: draft training step, Qwen3-4B shape, seq 2048, one device
# train2  the same with fsdp over 2 devices (compiling the step takes about 3 minutes)
# decode  tools/bench_decode.py: single-GPU decode against the bandwidth ceiling and HF
# JSON lands in $OUT; the tables are printed last.
set -u
OUT=${OUT:-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
parts=${*:-tests demo train}
nvidia-smi -L 2>/dev/null | tee "$OUT/gpus.txt"
for part in $parts; do
  echo "=== $part ($(date +%T))"
  case $part in
    tests) timeout 150 $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/tests.txt" ;;
    demo) timeout 45 $PY -m specexit_jax.decode --json > "$OUT/demo.json" 2> "$OUT/demo.err"; tail -3 "$OUT/demo.err"; head -c 600 "$OUT/demo.json"; echo ;;
    eval) timeout 330 $PY -m specexit_jax.eval --temperature 1 --oracle --seed 3 --limit 300 \
        --modes ar,spec,specexit,budget,deer --smoothing boundary --exit-confidence 0.5 --exit-surprise 0.05 \
        --budget-tokens 64 --repeats 3 > "$OUT/eval_t1.txt" 2> "$OUT/eval_t1.err"; tail -3 "$OUT/eval_t1.err"
      timeout 230 $PY -m specexit_jax.eval --seed 3 --limit 300 --oracle --modes ar,spec,specexit \
        > "$OUT/eval_greedy.txt" 2> "$OUT/eval_greedy.err"; tail -3 "$OUT/eval_greedy.err" ;;
    build) timeout 560 $PY tools/build_demo.py --work /tmp/demo_build --install > "$OUT/build.txt" 2>&1; tail -25 "$OUT/build.txt"
      tar -cf "$OUT/assets.tar" -C specexit_jax/demo assets
      for m in target draft; do cp /tmp/demo_build/$m/metrics.jsonl "$OUT/${m}_metrics.jsonl"; done ;;
    draft) timeout 560 $PY tools/build_demo.py --work /tmp/demo_build --skip-target specexit_jax/demo/assets/target \
        --install > "$OUT/build.txt" 2>&1; tail -25 "$OUT/build.txt"
      tar -cf "$OUT/assets.tar" -C specexit_jax/demo assets/draft; cp /tmp/demo_build/draft/metrics.jsonl "$OUT/draft_metrics.jsonl" ;;
    mesh) timeout 540 $PY tools/bench_mesh.py --out "$OUT/mesh.json" > "$OUT/mesh.txt" 2> "$OUT/mesh.err"; tail -5 "$OUT/mesh.err" ;;
    train|train2) n=${part#train}; timeout $([ "$part" = train2 ] && echo 540 || echo 280) $PY tools/bench_train.py --devices "${n:-1}" --remat none --out "$OUT/$part.json" > "$OUT/$part.txt" 2> "$OUT/$part.err"; tail -5 "$OUT/$part.err" ;;
    decode) timeout 500 $PY tools/bench_decode.py --out "$OUT/decode.json" > "$OUT/decode.txt" 2> "$OUT/decode.err"; tail -5 "$OUT/decode.err" ;;
    *) echo "unknown part $part" ;;
  esac
done
for f in eval_t1 eval_greedy mesh train train2 decode; do
  [ -f "$OUT/$f.txt" ] && { echo "=== $f"; grep -v '^{' "$OUT/$f.txt"; }
done
exit 0
