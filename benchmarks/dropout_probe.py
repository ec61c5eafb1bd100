"""`peftbench run` with one part of its dropout changed: where does the cost of bulk masks to prompt tuning come from?

    python benchmarks/dropout_probe.py MODE run [peftbench run options]   (bench_execution.py's fast-probe-* executions)

Over 12 paired seeds bulk dropout masks (peftbench.run.dropout) cost prompt tuning two points of dev accuracy
against torch's masks (benchmarks/results/dropout-e5-small), though they pass every distribution test and differ
from torch's only in their random draws (benchmarks/results/dropout-scale-e5-small). MODE is one of:

- `none`: nothing changed (torch's masks), run in this process: shows that an in-process run reproduces the
  child-process run of `--dropout-masks torch`, so the modes below pair with it.
- `torch-reseeded`: torch's own dropout, its generator reseeded at the first training step (the run's seed +
  1,000,003), so only the draws differ from `none`, as with bulk masks, but drawn by torch. If this arm loses
  as bulk masks do, the loss is not the masks' but the baseline's draws'; if not, it is the masks'.
- `bulk-attention` / `bulk-hidden`: bulk masks for the attention probabilities only (the 4-D inputs of
  dropout) / for every other dropout only (embeddings, both residual branches, the classifier's), torch's
  elsewhere: which site carries the cost.

The runs are in this process (`--workers inline` is added), since the change is a patch of this process's
peftbench. Benchmark code only: nothing here changes what `peftbench` does.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

import peftbench.run.dropout as dropout
import peftbench.run.loop as loop
import peftbench.run.worker as worker
from peftbench.run.messages import WorkRequest, WorkResponse

RESEED = 1_000_003  # added to the run's seed: another stream of torch's generator for the dropout draws
ATTENTION_DIMS = 4  # attention probabilities are (batch, heads, queries, keys); every other dropout input less


def reseed_at_first_step() -> None:
    """Reseed torch's generator as each run's first training step begins (its head and data are drawn by then);
    several methods or seeds in one call are several runs of this process."""
    masks, work = loop.bulk_masks, worker.work
    pending = False

    def each_run(request: WorkRequest) -> WorkResponse:
        nonlocal pending
        pending = True
        return work(request)

    @contextmanager
    def reseeding(enabled: bool = True) -> Iterator[None]:
        nonlocal pending
        if pending:
            torch.manual_seed(torch.initial_seed() + RESEED)  # initial_seed: the run's seed, set by its worker
            pending = False
        with masks(enabled):
            yield

    worker.work = each_run  # an in-process run looks work up here when it starts
    loop.bulk_masks = reseeding


def bulk_only_where(attention: bool) -> None:
    """Bulk masks for the attention probabilities (attention=True) or for every other dropout; torch's elsewhere."""
    bulk: Callable[..., torch.Tensor] = dropout.bulk_dropout

    def routed(input: torch.Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> torch.Tensor:
        chosen = bulk if (input.dim() == ATTENTION_DIMS) == attention else dropout._torch_dropout
        return chosen(input, p, training, inplace)

    dropout.bulk_dropout = routed  # bulk_masks() installs whatever this name holds when a step begins


MODES: dict[str, Callable[[], None]] = {
    "none": lambda: None,
    "torch-reseeded": reseed_at_first_step,
    "bulk-attention": lambda: bulk_only_where(attention=True),
    "bulk-hidden": lambda: bulk_only_where(attention=False),
}


def main() -> None:
    if len(sys.argv) < 3 or sys.argv[1] not in MODES:
        sys.exit(f"usage: dropout_probe.py {'|'.join(MODES)} run [peftbench run options]")
    MODES[sys.argv[1]]()
    from peftbench.cli import main as peftbench_main

    sys.argv = ["peftbench", *sys.argv[2:], "--workers", "inline"]
    peftbench_main()


if __name__ == "__main__":
    main()
