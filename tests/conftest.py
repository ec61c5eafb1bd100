import gc
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach for the hub
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tiny_model import write_tiny_bert  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """accelerate keeps one process-wide state whose precision cannot change; the CLI runs one grid per
    process, but tests run many grids, with different precisions, in one process."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()


@pytest.fixture(autouse=True)
def earlier_objects_left_out_of_collections():
    """Every run ends in accelerate's free_memory, a full gc.collect. A worker process holds little, but this
    process holds every earlier test's objects, and each collect of an inline run took 0.2 s scanning them:
    objects from before the test are frozen (not scanned) while it runs, and given back to the collector after."""
    gc.freeze()
    yield
    gc.unfreeze()
