# lora-lab: two commands on a fresh clone.
#   make lab    create .venv if missing, install the tested versions, open JupyterLab on notebooks/
#   make test   create/update .venv, run every test (package tests and the notebooks under nbval), then
#               the notebooks again under another set of torch CPU kernels (the CPU matrix)
#   make lock   re-resolve the newest versions pyproject.toml allows and write them to constraints.txt

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := constraints.txt
# torch is pinned in the same pip command as the rest: 2.13.0 is the CPU build; an unpinned
# torch would pull a multi-GB CUDA build. The lock holds every other package to the tested version.
TORCH  := torch==2.13.0
export HF_HUB_OFFLINE      ?= 1
export HF_DATASETS_OFFLINE ?= 1
export PATH := $(abspath $(BIN)):$(PATH)
# notebooks run top to bottom in this venv's kernel; stored outputs are compared strictly except
# cells tagged nbval-ignore-output; sanitize.cfg masks addresses and timings.
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with notebooks/sanitize.cfg
# one pytest worker per core, each file (so each notebook) whole on one worker, one thread per worker
# so that workers do not fight over the cores
JOBS    ?= auto
THREADS ?= 1
PYTEST  := OMP_NUM_THREADS=$(THREADS) $(BIN)/python -m pytest -n $(JOBS) --dist loadfile
# the CPU matrix: torch's CPU kernels sum floats in a different order on AVX-512, AVX2 and plain CPUs,
# so stored notebook outputs are checked again under another kernel set than this machine's own. That
# second pass runs the Vietnamese notebooks: they run the English notebooks' code cell for cell (the
# translation tests hold them to it), so one pass checks both the Vietnamese edition and the other CPU.
MATRIX  ?= notebooks/vi

.PHONY: lab test test-matrix venv notebooks notebooks-vi benchmarks lock rebuild-data clean

$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(LOCK) $(TORCH) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(DISPLAY),,--no-browser) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

test: $(STAMP)
	$(PYTEST) $(NBVAL) tests notebooks --ignore=notebooks/vi $(PYTEST_ARGS)
	$(MAKE) --no-print-directory test-matrix

test-matrix: $(STAMP)
	@own=$$($(BIN)/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"); \
	alt=$$($(BIN)/python tests/cpu_matrix.py); \
	if [ -z "$$alt" ]; then echo "CPU matrix: no other torch CPU kernel set to try on this machine; $(MATRIX) as they are"; \
	$(PYTEST) $(NBVAL) $(MATRIX) $(PYTEST_ARGS); \
	else echo "CPU matrix: this run uses torch's $$own kernels; the Vietnamese notebooks (the same code) under ATEN_CPU_CAPABILITY=$$alt"; \
	ATEN_CPU_CAPABILITY=$$alt $(PYTEST) $(NBVAL) $(MATRIX) $(PYTEST_ARGS); fi

# After editing a notebook's paired .py (or .ipynb): sync the pair, then re-run it to store outputs.
NOTEBOOK_PY := $(sort $(wildcard notebooks/[0-9]*.py notebooks/solutions/[0-9]*.py))
notebooks: $(STAMP)
	$(BIN)/jupytext --sync $(NOTEBOOK_PY)
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.record_timing=False \
		$(NOTEBOOK_PY:.py=.ipynb)

# The Vietnamese notebooks: rebuilt from the English ones and notebooks/vi/translations/, then executed.
notebooks-vi: $(STAMP)
	$(BIN)/python -m lora_lab.translations build
	$(BIN)/jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.record_timing=False \
		notebooks/vi/[0-9]*.ipynb notebooks/vi/solutions/[0-9]*.ipynb
	$(BIN)/python -m lora_lab.translations check

benchmarks: $(STAMP)
	$(BIN)/python benchmarks/bench_lora.py
	$(BIN)/python benchmarks/bench_nf4.py
	$(BIN)/python benchmarks/beyond_lora_table.py  # notebook 07's table at full size: about 10 min

# A scratch venv resolves the newest versions within pyproject.toml's ranges; its freeze becomes the
# lock (local labels such as +cpu dropped). Run `make test` afterwards and commit both if it passes.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install -q --upgrade pip
	.lock-venv/bin/python -m pip install -q $(TORCH) ".[dev]"
	{ echo "# The versions make lab / make test install (pip constraints). Written by make lock; do not edit."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v -e '^lora-lab' -e '^pip==' | sed 's/+[a-z0-9.]*$$//'; } > $(LOCK)
	rm -rf .lock-venv

rebuild-data: $(STAMP)
	$(BIN)/python -m lora_lab.build_tiny

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
