#!/usr/bin/env bash
# On a machine with one NVIDIA GPU, from a clean clone, in a few minutes: install (the CUDA build of torch),
# run the test suite, run the seed grid with a random model of hfl/chinese-roberta-wwm-ext's exact size on
# the GPU (the reference protocol, 3 epochs, at bf16 with SDPA attention) and print its wall time and each
# method's samples/s and peak memory, then bench_train's ratios on CUDA for LoRA and full fine-tuning.
#
#   benchmarks/gpu_check.sh             # the real check (needs a CUDA GPU)
#   benchmarks/gpu_check.sh --dry-run   # every step but the CUDA calls, on a CPU: one test file, the grid
#                                       # built but not trained (--dry-run), bench_train on a tiny model, briefly
set -euo pipefail
cd "$(dirname "$0")/.."
dry=""
[ "${1:-}" = "--dry-run" ] && dry=1
scratch="$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
export HF_HUB_OFFLINE=1
started=$(date +%s)
step() { echo; echo "== $* ($(( $(date +%s) - started )) s)"; }

step "install"
make -s .venv/.installed-test
. .venv/bin/activate
python - "$dry" <<'PY'
import sys, torch
dry = sys.argv[1] == "1"
if torch.cuda.is_available():
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name(0)}")
elif dry:
    print(f"torch {torch.__version__}, no GPU: dry run on the CPU")
else:
    sys.exit("gpu_check: no CUDA GPU visible to torch (torch %s); use --dry-run on a CPU" % torch.__version__)
PY
device=cuda; [ -n "$dry" ] && device=cpu

step "tests"
if [ -n "$dry" ]; then python -m pytest -q tests/test_methods.py; else python -m pytest -q; fi

step "seed grid: random hfl/chinese-roberta-wwm-ext-size model, reference protocol, 3 epochs, bf16, SDPA, on $device"
python benchmarks/random_model.py --size reference "$scratch/model" >/dev/null
grid=(peftbench run --model "$scratch/model" --methods seed --preset seed --epochs 3 --precision bf16 --attention sdpa
      --device "$device" --out "$scratch/grid" --no-progress)
[ -n "$dry" ] && grid+=(--dry-run --workers inline)
grid_start=$(date +%s.%N)
"${grid[@]}" 2>"$scratch/grid.log" || { tail -5 "$scratch/grid.log"; exit 1; }
grid_wall=$(python -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$grid_start" "$(date +%s.%N)")
python - "$scratch/grid/results.csv" "$grid_wall" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1], encoding="utf-8")))
print(f"grid wall time: {sys.argv[2]} s for {len(rows)} runs")
print(f"{'method':15} {'status':10} {'train samples/s':>16} {'peak memory MB':>15} {'accuracy':>9}")
for r in rows:
    print(f"{r['method']:15} {r['status']:10} {r['train_samples_per_s'] or '-':>16} {r['peak_memory_mb'] or '-':>15} {r['accuracy'] or '-':>9}")
PY

step "bench_train on $device: (b)/(a) per method"
bench_model="$scratch/model"
bench=(--batch-size 64)
if [ -n "$dry" ]; then
    python benchmarks/random_model.py --size tiny "$scratch/tiny" >/dev/null
    bench_model="$scratch/tiny"; bench+=(--samples 128 --rounds 1 --warmup-steps 1 --memory round)
fi
# every variant's row (samples/s, padding, GFLOP/sample, samples/s at the measured bf16 peak, % of it), the ratios;
# then (b) alone under --compile (CUDA graphs; compiling falls in the warm-up steps)
for method in lora full; do
    python benchmarks/bench_train.py --model "$bench_model" --method "$method" "${bench[@]}" 2>/dev/null \
        | grep -E "^(a:|b:|c:|measured|ratio|speedup)" | sed "s/^/$method /"
    python benchmarks/bench_train.py --model "$bench_model" --method "$method" "${bench[@]}" --variants b --compile on \
        --memory round 2>/dev/null | grep -E "^b:" | sed "s/^/$method compiled /"
done

step "done"
