# lora-lab: two commands on a fresh clone.
#   make lab    create .venv if missing, install the tested versions, open JupyterLab on notebooks/
#   make test   create/update .venv, run the package tests with the tested versions, then every notebook
#               under nbval as Colab learners get it: in the Colab stand-in (.venv-colab, Colab's package
#               versions), against the kit installed by the notebooks' first cell, from a folder outside the
#               clone; the English notebooks under this machine's torch CPU kernels, the Vietnamese ones (the
#               same code) under another set, both at once (make test-colab: that pass alone)
#   make lock   re-resolve the newest versions pyproject.toml allows and write them to constraints.txt

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH_STAMP := $(VENV)/.torch
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
# The second pass: the Colab stand-in. A venv with Colab's published package versions
# (tests/colab/pip-freeze.gpu.txt; torch stays the CPU build), rebuilt when that list, the lock, the script or
# the kit's dependencies (pyproject.toml) change. Each run installs the kit with the notebooks' own first cell,
# then runs every notebook, English and Vietnamese, with solutions, from a folder outside the clone: the English
# ones under this machine's torch CPU kernels, the Vietnamese ones, which run the same code, under another set
# (tests/cpu_matrix.py: AVX-512 machines check AVX2, AVX2 machines the plain kernels), because stored outputs must
# hold on every learner's CPU. The two editions run side by side, one pytest process each (one core each).
# The notebooks run in this pass only: the lock's versions (the upper end of every range) are the package tests'.
COLAB       := .venv-colab
COLAB_STAMP := $(COLAB)/.image
STANDIN     := tests/colab_standin.py

.PHONY: lab test test-colab colab-ready test-colab-pass venv notebooks notebooks-vi benchmarks lock rebuild-data clean

# The stand-in hard-links torch's files from .venv, so it needs only torch there: it is built while the rest of .venv
# installs (pip keeps one core busy; the other would wait).
$(COLAB_STAMP): tests/colab/pip-freeze.gpu.txt $(LOCK) $(STANDIN) pyproject.toml | $(TORCH_STAMP)
	rm -rf $(COLAB)
	$(PYTHON) $(STANDIN) image $(COLAB) $(VENV)
	touch $@

$(TORCH_STAMP): $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(LOCK) $(TORCH)
	touch $@

$(STAMP): $(TORCH_STAMP) pyproject.toml $(LOCK)
	$(BIN)/python -m pip install -q -c $(LOCK) $(TORCH) -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(DISPLAY),,--no-browser) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The stand-in is built and the first cell installs the kit while the rest of .venv installs and the first pass
# runs (pip waits on the disk and the network as much as on a core); its output is shown once the first pass is done.
test: $(TORCH_STAMP)
	@log=$$(mktemp); $(MAKE) --no-print-directory colab-ready > $$log 2>&1 & ready=$$!; \
	$(MAKE) --no-print-directory venv && \
	$(PYTEST) tests $(PYTEST_ARGS); first=$$?; \
	wait $$ready; built=$$?; cat $$log; rm -f $$log; \
	if [ $$first -ne 0 ]; then exit $$first; fi; if [ $$built -ne 0 ]; then exit $$built; fi
	$(MAKE) --no-print-directory test-colab-pass

test-colab: colab-ready
	$(MAKE) --no-print-directory test-colab-pass

# The notebooks' first cell, run in the stand-in as Colab runs it (tests/colab_standin.py install)
colab-ready: $(COLAB_STAMP)
	$(PYTHON) $(STANDIN) install $(COLAB)

test-colab-pass:
	@run=$$(mktemp -d); trap 'rm -rf "$$run"' EXIT; \
	$(PYTHON) $(STANDIN) workdir $$run; \
	own=$$($(BIN)/python -c "import torch; print(torch.backends.cpu.get_cpu_capability())"); \
	alt=$$($(BIN)/python tests/cpu_matrix.py); \
	echo "Colab stand-in: every notebook, against the installed kit, from $$run; the English ones under this" \
	     "machine's torch CPU kernels ($$own), the Vietnamese ones (the same code) under $${alt:-the same}"; \
	cd $$run && export LORA_LAB_STANDIN=$(abspath $(COLAB)) LORA_LAB_REPO=$(CURDIR) PYDEVD_DISABLE_FILE_VALIDATION=1 \
		OMP_NUM_THREADS=$(THREADS); py=$(abspath $(COLAB))/bin/python; \
	env $${alt:+ATEN_CPU_CAPABILITY=$$alt} $$py -m pytest -p no:cacheprovider $(NBVAL) notebooks/vi $(PYTEST_ARGS) \
		> vi.log 2>&1 & vi=$$!; \
	$$py -m pytest -p no:cacheprovider $(NBVAL) notebooks tests --ignore=notebooks/vi $(PYTEST_ARGS); en=$$?; \
	wait $$vi; v=$$?; echo; echo "The Vietnamese notebooks, beside the English ones:"; cat vi.log; \
	[ $$en -eq 0 ] && [ $$v -eq 0 ]

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
	rm -rf $(VENV) $(COLAB) .pytest_cache .hypothesis
