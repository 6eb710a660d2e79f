"""The kit installs itself: pyproject, environment.yml, Makefile and CI agree with one another."""

import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0].lower()


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _conda_pip() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    return [line.strip()[2:].strip() for line in lines[start + 1:] if line.strip().startswith("- ")]


def test_environment_yml_names_the_same_dependencies_as_pyproject():
    project = _pyproject()
    wanted = project["dependencies"] + project["optional-dependencies"]["dev"]
    conda = [s for s in _conda_pip() if not s.startswith(("-e", "-c"))]
    assert sorted(map(_name, conda)) == sorted(map(_name, wanted))
    specs = {_name(s): s.split("#")[0].strip() for s in wanted}
    for spec in conda:
        if _name(spec) == "torch":
            assert spec == "torch==2.13.0"  # pinned like the Makefile's install
        else:
            assert spec == specs[_name(spec)], f"environment.yml says {spec}, pyproject says {specs[_name(spec)]}"
    assert "-e .[dev]" in _conda_pip() and "-c constraints.txt" in _conda_pip()


def test_makefile_pins_torch_in_the_same_pip_command():
    make = (ROOT / "Makefile").read_text()
    assert "TORCH  := torch==2.13.0" in make
    assert "LOCK   := constraints.txt" in make
    assert re.search(r"pip install -q -c \$\(LOCK\) \$\(TORCH\) -e \"\.\[dev\]\"", make)
    for target in ("lab:", "test:"):
        assert target in make


def test_ci_runs_make_test():
    assert "make test" in (ROOT / ".ci/run").read_text()


@pytest.mark.parametrize("name", ["notebooks", "lora_lab", "data", "tests", "environment.yml",
                                  "README.md", "Makefile", ".ci/run"])
def test_layout(name):
    assert (ROOT / name).exists()


def test_readme_shows_the_two_commands_first():
    readme = (ROOT / "README.md").read_text()
    start = readme.index("```")
    first_block = readme[start:readme.index("```", start + 3)]
    assert "make lab" in first_block and "make test" in first_block


# ----------------------------------------------------------------------------- the lock


def _lock() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = [line.split("==") for line in lines if line and not line.startswith("#")]
    assert all(len(p) == 2 for p in pins), "constraints.txt holds name==version lines only"
    return {_canon(name): version for name, version in pins}


def _canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_lock_pins_every_dependency_within_pyprojects_ranges():
    from packaging.requirements import Requirement

    project, lock = _pyproject(), _lock()
    for spec in project["dependencies"] + project["optional-dependencies"]["dev"]:
        req = Requirement(spec.split("#")[0])
        assert _canon(req.name) in lock, f"{req.name} is not in constraints.txt: run `make lock`"
        assert req.specifier.contains(lock[_canon(req.name)], prereleases=True), \
            f"constraints.txt has {req.name}=={lock[_canon(req.name)]}, outside pyproject's {req.specifier}"
    assert lock["torch"] == "2.13.0"  # the CPU build's version, without its +cpu label
    assert "lora-lab" not in lock and not any("+" in v for v in lock.values())


def test_this_environment_is_the_locked_one():
    # the suite's verdict speaks for the locked versions only: a drifted venv is re-made by `make test`
    import importlib.metadata as md

    drift = []
    for name, version in _lock().items():
        try:
            installed = md.version(name).split("+")[0]
        except md.PackageNotFoundError:
            continue  # a platform-specific package this machine does not need
        if installed != version:
            drift.append(f"{name} {installed} (lock: {version})")
    assert not drift, "installed versions differ from constraints.txt: " + ", ".join(drift)


def test_readme_names_the_tested_versions():
    readme, lock = (ROOT / "README.md").read_text(), _lock()
    for name in ("torch", "transformers", "peft", "trl", "bitsandbytes", "datasets", "accelerate"):
        assert f"{name} {lock[name]}" in readme, f"README should say the kit is tested on {name} {lock[name]}"


def test_every_subpackage_ships():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = sorted(p.parent.relative_to(ROOT).as_posix().replace("/", ".")
                   for p in (ROOT / "lora_lab").rglob("__init__.py"))
    assert sorted(set(setuptools["packages"]) - {"lora_lab.embedded"}) == found
    assert setuptools["package-dir"] == {"lora_lab.embedded": "data"}


def test_the_cpu_matrix_always_tries_another_kernel_set():
    from cpu_matrix import other_capability

    assert other_capability("AVX512", "flags: avx2 avx512f") == "avx2"
    assert other_capability("AVX2", "flags: avx2") == "default"
    assert other_capability("DEFAULT", "flags: sse4_2 avx2 fma") == "avx2"  # a run forced to the plain kernels
    assert other_capability("DEFAULT", "") == ""  # nothing else on this CPU
    assert other_capability("SVE256", "") == "default"
    make = (ROOT / "Makefile").read_text()
    assert "tests/cpu_matrix.py" in make and "ATEN_CPU_CAPABILITY=$$alt" in make
    assert "test-colab-pass" in make.split("\ntest: $(TORCH_STAMP)")[1].split("\n\n")[0]


def test_make_test_runs_every_notebook_in_the_colab_stand_in():
    make = (ROOT / "Makefile").read_text()
    test = make.split("\ntest: $(TORCH_STAMP)")[1].split("\n\n")[0]
    assert "$(MAKE) --no-print-directory colab-ready" in test and "test-colab-pass" in test
    assert "wait $$ready" in test  # the stand-in is ready (or its failure reported) before its pass starts
    # built beside the rest of .venv: it needs only torch there, and the first pass waits for the whole .venv
    assert test.index("colab-ready") < test.index("$(MAKE) --no-print-directory venv &&") < test.index("$(PYTEST)")
    assert "| $(TORCH_STAMP)" in make.split("$(COLAB_STAMP):")[1].split("\n")[0]
    ready = make.split("colab-ready: $(COLAB_STAMP)")[1].split("\n\n")[0]
    assert "$(STANDIN) install $(COLAB)" in ready  # the kit installed by the notebooks' first cell
    recipe = make.split("test-colab-pass:")[1].split("\n\n")[0]
    assert "mktemp -d" in recipe and "cd $$run" in recipe  # from a folder outside the clone
    assert "py=$(abspath $(COLAB))/bin/python" in recipe
    # both editions, with solutions: the English ones (and the stand-in's tests) under this CPU's kernels, the
    # Vietnamese ones under another set, side by side
    assert "$$py -m pytest -p no:cacheprovider $(NBVAL) notebooks tests --ignore=notebooks/vi" in recipe
    vi = recipe.split("$${alt:+ATEN_CPU_CAPABILITY=$$alt} $$py -m pytest")[1].split("&")[0]
    assert "$(NBVAL) notebooks/vi" in vi
    assert "wait $$vi" in recipe and "[ $$en -eq 0 ] && [ $$v -eq 0 ]" in recipe
    # the first pass is the package tests: each notebook runs once, in the stand-in
    assert "notebooks" not in test.split("$(PYTEST)")[1].split(";")[0]
    stamp = make.split("$(COLAB_STAMP):")[1].split("\n")[0]
    assert "tests/colab/pip-freeze.gpu.txt" in stamp and "$(LOCK)" in stamp  # rebuilt when either changes
