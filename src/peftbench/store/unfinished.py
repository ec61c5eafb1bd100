"""Trials of a run that finished before the run did, kept in --out so that a search stopped half-way (a killed
process, a machine taken back) goes on at its next rate instead of its first.

A run of several rates trains them one after another, each in a trial (runner.protocol). Each trial that ends
(trained in full, or stopped by --search halving) is written to `unfinished/<run_id>/` at once: what its worker
answered, the weights it would be judged by, and the halving study as it stood after it (Optuna's journal). When
the run is started again with the same settings (its fingerprint), the trials found there are taken as they were
and the study is put back as it stood after the last of them, so the next trial meets the same rivals at its
rungs as it would have. The folder goes once the run's record is stored.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from peftbench.files import write_atomic
from peftbench.run.messages import WorkResponse

FOLDER = "unfinished"


class UnfinishedTrials:
    """The ended trials of one run, in the order its rates train."""

    def __init__(self, out: Path, run_id: str, fingerprint: str) -> None:
        self.folder = out / FOLDER / run_id
        self.fingerprint = fingerprint

    def state_file(self, number: int) -> Path:
        """Where trial `number` saves the weights it is judged by (kept here, not in the scratch folder); the
        folder is made for its worker to write into."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return self._state(number)

    def ended(self, rates: list[float], with_states: bool) -> list[WorkResponse]:
        """The responses of the first trials that ended under these settings and rates, in order; an earlier
        attempt with other settings, or a gap (a trial's weights missing where they are needed), ends the list."""
        found = []
        for number, lr in enumerate(rates):
            if with_states and not self._state(number).exists():
                break
            try:
                saved = json.loads(self._response(number).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                break
            if saved.get("fingerprint") != self.fingerprint or saved.get("lr") != lr:
                break
            found.append(WorkResponse.from_json(saved["response"]))
        return found

    def keep(self, number: int, lr: float, response: WorkResponse, journal: Path | None) -> None:
        """Trial `number` ended: its study as it stands now first, then its response (whose presence says the
        trial is done), so a process killed in between leaves the trial to be trained again, never half-kept."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if journal is not None and journal.exists():
            shutil.copyfile(journal, self._journal(number))
        record = {"fingerprint": self.fingerprint, "lr": lr, "response": response.to_json()}
        write_atomic(self._response(number), json.dumps(record))

    def restore_journal(self, trials: int, journal: Path) -> None:
        """The study as it stood after the first `trials` trials (none: a new study)."""
        journal.unlink(missing_ok=True)
        if trials and self._journal(trials - 1).exists():
            shutil.copyfile(self._journal(trials - 1), journal)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.parent.rmdir()  # the last unfinished run of --out
        except OSError:
            pass

    def _state(self, number: int) -> Path:
        return self.folder / f"trial{number}.safetensors"

    def _response(self, number: int) -> Path:
        return self.folder / f"trial{number}.json"

    def _journal(self, number: int) -> Path:
        return self.folder / f"search{number}.journal"
