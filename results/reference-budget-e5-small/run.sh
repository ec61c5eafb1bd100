#!/bin/bash
# Phase 2 of NOTES.md: each method at the rate results/lr-search-e5-small chose on dev, 3 seeds, at the
# reference's budget; run from a clean worktree of the commit NOTES.md names into a scratch folder, whose run
# files are then copied here (a finished run is skipped when this runs again):
#   git worktree add /work/wt-phase2 COMMIT
#   METHODS=full,lora,prompt-tuning,prefix-tuning,p-tuning nohup setsid bash results/reference-budget-e5-small/run.sh \
#       > /work/refbudget/phase2.log 2>&1 < /dev/null &
# METHODS: the reference's five first; the five others (NOTES.md's rule) once the search has chosen them.
# LR_FROM: where the chosen rates are read; a method whose search finished after COMMIT reads them from the
# search's scratch folder, whose run files are the ones committed in results/lr-search-e5-small/runs/.
# CPU cores: run it under `taskset -c N` beside other work (a worker takes one thread per allowed core).
WORKTREE=${WORKTREE:-/work/wt-phase2}
OUT=${OUT:-/work/refbudget/phase2}
PEFTBENCH=${PEFTBENCH:-/work/main/.venv/bin/peftbench}
METHODS=${METHODS:-full,lora,prompt-tuning,prefix-tuning,p-tuning}
LR_FROM=${LR_FROM:-results/lr-search-e5-small}
export PYTHONPATH=$WORKTREE/src
cd "$WORKTREE" || exit 2  # --lr-from reads the search's run files as that commit holds them
echo "=== $(date -u +%FT%TZ) $METHODS"
"$PEFTBENCH" run --model e5-small-offline --preset tuned --eval-every 49 --seeds 0,1,2 --methods "$METHODS" \
    --lr-from "$LR_FROM" --no-progress --out "$OUT"
rc=$?  # taken at once: the $(date) below would reset $?
echo "=== $(date -u +%FT%TZ) done rc=$rc"
