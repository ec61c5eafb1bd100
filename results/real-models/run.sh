#!/bin/bash
# The runs of NOTES.md, one command per model and method (each method with its own grid), run from a clean
# worktree of the commit NOTES.md names into a scratch folder, one output folder per model and data; a finished
# run is skipped when this runs again, a run stopped half-way is searched again from its first rate:
#   git worktree add /work/wt-real COMMIT && nohup setsid bash results/real-models/run.sh > LOG 2>&1 < /dev/null &
# PARTS (default: all, in this order) picks some of: smollm2-sst2 e5-small m3e-small gemma3
WORKTREE=${WORKTREE:-/work/wt-real}
SCRATCH=${SCRATCH:-/work/realmodels}
DATA=${DATA:-/work/shared/data}
PEFTBENCH=${PEFTBENCH:-/work/main/.venv/bin/peftbench}
PARTS=${PARTS:-smollm2-sst2 e5-small m3e-small gemma3}
export PYTHONPATH=$WORKTREE/src
# fp32 on every machine: the runs of this folder may come from CPUs with and without native bf16 (sessions
# change machines), and one folder holds one precision
COMMON=(--preset demo --precision fp32 --seeds 0 --eval-every 16 --search halving --no-progress)
SST2=(--data "$DATA/sst2_train.tsv" --test-data "$DATA/sst2_dev.tsv" --text-column sentence --dev-size 0.02
      --max-eval-samples 872)
grid() {
  case $1 in
    full) echo 1e-5,3e-5,1e-4,3e-4,1e-3 ;;
    lora) echo 3e-4,1e-3,3e-3,1e-2,3e-2 ;;
    *) echo 3e-3,1e-2,3e-2,1e-1,3e-1 ;;  # prompt-tuning, prefix-tuning, p-tuning, ia3
  esac
}
search() {  # part model out-folder methods data-options...
  local part=$1 model=$2 out=$3 methods=$4; shift 4
  [[ " $PARTS " == *" $part "* ]] || return 0
  for method in $methods; do
    echo "=== $(date -u +%FT%TZ) $model $method $(grid "$method")"
    "$PEFTBENCH" run --model "$model" "${COMMON[@]}" --out "$SCRATCH/$out" --methods "$method" \
        --lr-grid "$(grid "$method")" "$@"
    local rc=$?  # taken at once: the $(date) below would reset $?
    echo "=== $(date -u +%FT%TZ) $model $method done rc=$rc"
  done
}
DECODER_METHODS="lora full prompt-tuning prefix-tuning p-tuning"
search smollm2-sst2 smollm2-135m-offline smollm2-sst2 "$DECODER_METHODS" "${SST2[@]}"
search e5-small e5-small-offline e5-small-chnsenticorp "lora full ia3"
search m3e-small m3e-small-offline m3e-small-chnsenticorp "lora full ia3"
search gemma3 gemma3-270m-offline gemma3-chnsenticorp "$DECODER_METHODS ia3"
