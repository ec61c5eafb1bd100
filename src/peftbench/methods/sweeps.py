"""Where the registry's learning rates come from: the dev-only sweeps that chose them, kept apart from the
entries so that the entries stay a table and the figures stay checkable against the committed runs."""

from __future__ import annotations

# Rates measured on dev alone: each method's grid on e5-small-offline with seed 0, the test split never read
# (--select-only). The runs are in results/lr-grid-e5-small; tests/test_registry_and_tuned.py checks that
# these figures and the chosen rates are the ones recorded there.
SWEEP_FOLDER = "results/lr-grid-e5-small"
SWEEP_COMMAND = (
    "peftbench run --model e5-small-offline --preset tuned --seeds 0 --max-train-samples 2048 --epochs 1 "
    f"--select-only --out {SWEEP_FOLDER} --methods {{method}} --lr-grid {{grid}}"
)
DEV_SWEEPS: dict[str, dict[float, float]] = {  # method -> {lr: dev accuracy of the best epoch}
    "full": {3e-5: 0.6856, 1e-4: 0.8789, 3e-4: 0.8415},
    "prefix-tuning": {3e-3: 0.6856, 1e-2: 0.6856, 3e-2: 0.6856},
    "prompt-tuning": {1e-2: 0.6856, 3e-2: 0.6881, 1e-1: 0.6856},
    "p-tuning": {1e-2: 0.6856, 3e-2: 0.6856, 1e-1: 0.6997},
    "lora": {1e-3: 0.6856, 3e-3: 0.8737, 1e-2: 0.8595},
    "rslora": {3e-4: 0.6856, 1e-3: 0.6856, 3e-3: 0.8737},
    "ia3": {3e-3: 0.6856, 1e-2: 0.6856, 3e-2: 0.8853},
    "vera": {6e-3: 0.6856, 2e-2: 0.6856, 6e-2: 0.8737},
    "ln-tuning": {3e-3: 0.6856, 1e-2: 0.6856, 3e-2: 0.6856},
    "bitfit": {1e-3: 0.6856, 3e-3: 0.6856, 1e-2: 0.6856},
}


def _rate(rate: float) -> str:
    mantissa, exponent = f"{rate:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def swept(method: str, why: str = "") -> str:
    """An entry's source for a rate chosen by a dev-only sweep: the grid, the dev accuracies and the command."""
    dev_accuracy = DEV_SWEEPS[method]
    grid = ",".join(map(_rate, dev_accuracy))  # as typed in the sweep: the grid's text is part of a run's identity
    shown = ", ".join(f"{_rate(rate)} → {accuracy:.4f}" for rate, accuracy in dev_accuracy.items())
    return (
        f"dev accuracy by lr on e5-small-offline ({shown}){'; ' + why if why else ''}; "
        f"`{SWEEP_COMMAND.format(method=method, grid=grid)}`"
    )
