# lora-lab: two commands on a fresh clone.
#   make lab    create .venv if missing, install, open JupyterLab on notebooks/
#   make test   create/update .venv, run every test (package tests, then the notebooks under nbval)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned in the same pip command as the rest: 2.13.0 is the CPU build; an unpinned
# torch would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0
export HF_HUB_OFFLINE      ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PATH := $(abspath $(BIN)):$(PATH)
# notebooks run top to bottom in this venv's kernel; stored outputs are compared strictly except
# cells tagged nbval-ignore-output; sanitize.cfg masks addresses and timings.
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg

.PHONY: lab test venv notebooks benchmarks rebuild-data clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(DISPLAY),,--no-browser) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest $(NBVAL) tests notebooks $(PYTEST_ARGS)

# After editing a notebook's paired .py (or .ipynb): sync the pair, then re-run it to store outputs.
NOTEBOOK_PY := $(sort $(wildcard notebooks/[0-9]*.py notebooks/solutions/[0-9]*.py))
notebooks: $(STAMP)
	$(BIN)/jupytext --sync $(NOTEBOOK_PY)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.record_timing=False \
		$(NOTEBOOK_PY:.py=.ipynb)

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/bench_lora.py
	$(BIN)/python benchmarks/bench_nf4.py

rebuild-data: $(STAMP)
	$(BIN)/python -m lora_lab.build_tiny

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
