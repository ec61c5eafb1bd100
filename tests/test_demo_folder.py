"""README quotes `make demo`'s figures from results/demo-fresh-clone: that folder must hold the runs `make demo`
plans today. When the demo's protocol changes (its preset's values, its methods, its seeds, its data cut, the
bundled data) or its execution's settings do (precision, batching, dropout masks as asked), this fails until
the folder is made again (its NOTES.md says how) and README's figures with it."""

import re
from pathlib import Path

from peftbench import cli
from peftbench.config.sections import EXECUTION_FIELDS
from peftbench.data import load_split
from peftbench.runner.planning import Prepared, plan
from peftbench.store.identity import protocol_differences
from peftbench.store.runs import ResultStore

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "results" / "demo-fresh-clone"
REGENERATE = (
    "results/demo-fresh-clone is not what `make demo` runs now: make it again (its NOTES.md) and README's figures"
)


def demo_command() -> list[str]:
    """The arguments `make demo` gives peftbench, read from the Makefile's demo recipe."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^demo:.*\n\t\$\(BIN\)/peftbench (.+)$", makefile, re.MULTILINE)
    assert recipe, "no `demo:` recipe running $(BIN)/peftbench in the Makefile"
    return recipe.group(1).replace("$(DEMO_OUT)", "results/demo").split()


def test_the_committed_demo_folder_holds_the_runs_make_demo_plans_now():
    grid = cli.grid_from_args(cli.build_parser().parse_args(demo_command()))
    records = {r.run_id: r for r in ResultStore(FOLDER, read_only=True).records()}
    assert records, f"no runs in {FOLDER}"
    stored = next(iter(records.values()))
    split = load_split(grid.data)
    # what the model decides (its identity, the length it allows) is taken from the stored runs: the model is
    # pinned by its wheel's version, and converting it here would take a minute
    length = grid.data.max_length if isinstance(grid.data.max_length, int) else stored.config.data["max_length"]
    prepared = Prepared("", length, split.train.sha256, stored.config.model_identity or {}, split, None)
    planned = plan(grid, prepared)
    assert sorted(run.run_id for run in planned) == sorted(records), REGENERATE
    for run in planned:
        differences = protocol_differences(records[run.run_id], run.config, type(grid.train))
        assert not differences, f"{REGENERATE}; {run.run_id}: {'; '.join(differences)}"
        # and how it is executed (precision, batching, dropout masks as asked): not the experiment, but the figures
        executed = {name: records[run.run_id].config.train.get(name) for name in EXECUTION_FIELDS}
        assert executed == {name: run.config.train[name] for name in EXECUTION_FIELDS}, f"{REGENERATE}; {run.run_id}"
