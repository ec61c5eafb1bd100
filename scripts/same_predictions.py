"""Whether the runs of two results folders predicted the same: run by run, how many test predictions differ.

    python scripts/same_predictions.py DIR_A DIR_B

For each run id in both folders: identical or the number of predictions that differ, each run's accuracy,
and how its workers started and its precision (what could make two runs of one experiment differ). Exit 1
when some run's predictions differ, 0 when all are identical.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from peftbench.store.runs import ResultStore  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    args = parser.parse_args()
    runs = [
        {r.run_id: r for r in ResultStore(folder, read_only=True).records()} for folder in (args.first, args.second)
    ]
    common = sorted(set(runs[0]) & set(runs[1]))
    if not common:
        print(f"no run id in both {args.first} and {args.second}", file=sys.stderr)
        return 2
    differ = 0
    for run_id in common:
        a, b = (r[run_id].result for r in runs)
        pa, pb = a.predictions or [], b.predictions or []
        changed = sum(x != y for x, y in zip(pa, pb)) + abs(len(pa) - len(pb))
        differ += changed > 0
        verdict = "identical" if not changed else f"{changed} of {max(len(pa), len(pb))} differ"
        print(
            f"{run_id}: {verdict}; accuracy {a.accuracy} / {b.accuracy}; workers {a.worker_start} / {b.worker_start}; "
            f"precision {a.precision_used} / {b.precision_used}"
        )
    print(f"{len(common) - differ} of {len(common)} run(s) with identical test predictions")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
