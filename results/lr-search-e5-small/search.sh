#!/bin/bash
# The search of NOTES.md, one command per method, run from a clean worktree of commit a0c5be7 into a scratch
# folder (each finished run is skipped when this runs again; a run stopped half-way is retrained):
#   git worktree add /work/wt-a0c5be7 a0c5be7 && mkdir -p /work/refbudget
#   nohup setsid bash results/lr-search-e5-small/search.sh > /work/refbudget/search.log 2>&1 < /dev/null &
# ORDER=reverse takes the methods from the last: a second instance on another core shares the scratch folder with
# the first (each method's run is claimed, so neither trains what the other holds or finished); the order changes
# no result, each method's search being independent of the others.
WORKTREE=${WORKTREE:-/work/wt-a0c5be7}
SCRATCH=${SCRATCH:-/work/refbudget/search}
PEFTBENCH=${PEFTBENCH:-/work/main/.venv/bin/peftbench}
export PYTHONPATH=$WORKTREE/src
ORDER=${ORDER:-forward}
if [ "$ORDER" = reverse ]; then order() { tac; }; else order() { cat; }; fi
while read -r method grid; do
  [ -z "$method" ] && continue
  echo "=== $(date -u +%FT%TZ) $method $grid"
  "$PEFTBENCH" run --model e5-small-offline --preset tuned --seeds 0 --eval-every 49 --search halving --select-only \
      --no-progress --out "$SCRATCH" --methods "$method" --lr-grid "$grid"; rc=$?
  echo "=== $(date -u +%FT%TZ) $method done rc=$rc"
done < <(order <<'GRIDS'
full 1e-5,3e-5,1e-4,3e-4,1e-3
lora 3e-4,1e-3,3e-3,1e-2,3e-2
prompt-tuning 3e-3,1e-2,3e-2,1e-1,3e-1
prefix-tuning 3e-3,1e-2,3e-2,1e-1,3e-1
p-tuning 3e-3,1e-2,3e-2,1e-1,3e-1
rslora 3e-4,1e-3,3e-3,1e-2,3e-2
ia3 3e-3,1e-2,3e-2,1e-1,3e-1
vera 6e-3,2e-2,6e-2,2e-1,6e-1
ln-tuning 3e-4,1e-3,3e-3,1e-2,3e-2
bitfit 3e-4,1e-3,3e-3,1e-2,3e-2
dora 1e-4,3e-4,1e-3,3e-3,1e-2
pissa 3e-5,1e-4,3e-4,1e-3,3e-3
adalora 3e-4,1e-3,3e-3,1e-2,3e-2
loha 1e-4,3e-4,1e-3,3e-3,1e-2
lokr 1e-4,3e-4,1e-3,3e-3,1e-2
fourierft 5e-3,1.5e-2,5e-2,1.5e-1,5e-1
oft 1e-5,3e-5,1e-4,3e-4,1e-3
boft 3e-5,1e-4,3e-4,1e-3,3e-3
hra 1e-4,3e-4,1e-3,3e-3,1e-2
miss 1e-4,3e-4,1e-3,3e-3,1e-2
GRIDS
)
