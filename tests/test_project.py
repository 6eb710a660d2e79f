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
    conda = [s for s in _conda_pip() if not s.startswith("-e")]
    assert sorted(map(_name, conda)) == sorted(map(_name, wanted))
    specs = {_name(s): s.split("#")[0].strip() for s in wanted}
    for spec in conda:
        if _name(spec) == "torch":
            assert spec == "torch==2.13.0"  # pinned like the Makefile's install
        else:
            assert spec == specs[_name(spec)], f"environment.yml says {spec}, pyproject says {specs[_name(spec)]}"
    assert "-e .[dev]" in _conda_pip()


def test_makefile_pins_torch_in_the_same_pip_command():
    make = (ROOT / "Makefile").read_text()
    assert "TORCH  := torch==2.13.0" in make
    assert re.search(r"pip install -q \$\(TORCH\) -e \"\.\[dev\]\"", make)
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
