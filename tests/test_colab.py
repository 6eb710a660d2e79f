"""The kit as Colab learners get it: Colab's package versions, the kit installed by the notebooks' first cell.

The first tests need nothing but the files and run in every pass. The rest run in the Colab stand-in, the
second pass of `make test` (tests/colab_standin.py builds it; LORA_LAB_STANDIN names its venv): there this file
is a copy outside the clone, and everything it imports comes from the installed kit.
"""

import json
import os
import re
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import colab_standin as standin  # noqa: E402

STANDIN = Path(os.environ["LORA_LAB_STANDIN"]) if os.environ.get("LORA_LAB_STANDIN") else None
in_standin = pytest.mark.skipif(STANDIN is None, reason="runs in the Colab stand-in pass of `make test`")
# The one lower bound the stand-in cannot hold: PyPI's torch for Linux is a multi-GB CUDA build, so the stand-in
# runs the CPU build 2.13.0 in place of Colab's 2.11.0+cu128, and `torch>=2.11` (Colab's) is not exercised here.
UNTESTED_LOWER_BOUNDS = {"torch": "the stand-in runs torch==2.13.0, the CPU build, in place of Colab's 2.11"}


def _requirements() -> dict[str, str]:
    """name -> lower bound of every runtime dependency in pyproject.toml."""
    bounds = {}
    for req in standin.kit_requirements():
        m = re.fullmatch(r"([A-Za-z0-9._-]+)>=([0-9][0-9.]*)", req.replace(" ", ""))
        assert m, f"pyproject.toml: {req!r} is not `name>=version` (a lower bound the stand-in can hold)"
        bounds[standin.canonical(m.group(1))] = m.group(2)
    return bounds


def _version(v: str) -> tuple:
    parts = [int(x) for x in re.findall(r"\d+", v)[:4]]
    while parts and parts[-1] == 0:  # 5.15 == 5.15.0
        parts.pop()
    return tuple(parts)


# ----------------------------------------------------------------------------- from the files alone


def test_every_range_admits_the_version_colab_has():
    # a lower bound above Colab's version makes the first cell replace a package Colab has (ipywidgets>=8.1
    # replaced Colab's 7.7.1, whose frontend then showed no slider)
    colab = standin.colab_pins()
    for name, low in _requirements().items():
        if name in colab and name not in standin.ALLOWED_CHANGES:
            assert _version(colab[name]) >= _version(low), (
                f"pyproject.toml asks {name}>={low}, Colab has {colab[name]}: the first cell would replace it")


def test_every_allowed_change_has_a_reason_and_is_a_colab_package():
    colab = standin.colab_pins()
    for name, reason in standin.ALLOWED_CHANGES.items():
        assert name in colab, f"{name} is not in Colab's package list: nothing to change"
        assert len(reason.split()) >= 5, f"{name}: say why the first cell must change it"


def test_the_freeze_file_is_colabs():
    colab = standin.colab_pins()
    assert colab["transformers"] == "5.15.0" and colab["ipywidgets"] == "7.7.1" and colab["peft"] == "0.20.0"
    assert "torch" not in colab  # Colab's CUDA build: the stand-in installs the CPU build instead


def _readme_table() -> dict[str, tuple[str, str]]:
    """package -> (Colab has, after the first cell), from README.md's table of what the first cell changes."""
    readme = (HERE.parent / "README.md").read_text()
    section = readme.split("**What the first cell changes in Colab.**")[1].split("\n\n")[1]
    rows = [line.strip("|").split("|") for line in section.splitlines()[2:]]
    return {standin.canonical(r[0].strip()): (r[1].strip(), r[2].strip()) for r in rows}


def test_the_readme_lists_what_the_first_cell_changes():
    table, colab = _readme_table(), standin.colab_pins()
    assert set(table) == set(standin.ALLOWED_CHANGES)
    assert all(table[n][0] == colab[n] for n in table), "the README's 'Colab has' column is not Colab's list"


# ----------------------------------------------------------------------------- inside the Colab stand-in


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((STANDIN / standin.RECORD).read_text())


@in_standin
def test_the_kit_is_the_copy_the_first_cell_installed():
    import lora_lab
    from lora_lab.paths import EMBEDDED_DATASET, EMBEDDED_MODEL

    site = Path(lora_lab.__file__).resolve().parents[1]
    assert site.name == "site-packages" and site.is_relative_to(STANDIN.resolve()), lora_lab.__file__
    assert EMBEDDED_MODEL.is_relative_to(site) and EMBEDDED_DATASET.is_relative_to(site)  # data shipped inside
    dist = next(site.glob("lora_lab-*.dist-info"))
    direct = json.loads((dist / "direct_url.json").read_text())
    assert not direct.get("dir_info", {}).get("editable"), "installed editable: Colab's cell never does that"
    repo = Path(os.environ["LORA_LAB_REPO"]).resolve() if os.environ.get("LORA_LAB_REPO") else None
    assert not any(repo and Path(p or ".").resolve() == repo for p in sys.path), "the clone is on sys.path"
    assert (STANDIN / "bin" / "lora-lab").exists()


@in_standin
def test_the_stand_in_holds_colabs_versions(record):
    before, colab = record["before"], record["colab"]
    wrong = {n: (v, before.get(n)) for n, v in colab.items() if n in before and before[n] != v}
    assert not wrong, f"not at Colab's version (Colab's, the stand-in's): {wrong}"
    import ipywidgets
    import peft
    import transformers

    # this process runs the notebooks' libraries: tests/test_widgets.py here checks the sliders under 7.7.1
    assert (ipywidgets.__version__, transformers.__version__, peft.__version__) == \
        (colab["ipywidgets"], colab["transformers"], colab["peft"])


@in_standin
def test_the_first_cell_changes_only_what_it_must(record):
    before, after = record["before"], record["after"]
    changed = {n for n, v in before.items() if after.get(n) != v and n != "lora-lab"}
    unexpected = changed - set(standin.ALLOWED_CHANGES)
    assert not unexpected, "the first cell replaced Colab's " + ", ".join(
        f"{n} {before[n]} -> {after.get(n)}" for n in sorted(unexpected))
    stale = set(standin.ALLOWED_CHANGES) - changed
    assert not stale, f"listed as changed by the first cell, but kept at Colab's version: {sorted(stale)}"
    for name in ("ipywidgets", "widgetsnbextension", "jupyterlab-widgets", "torch", "transformers", "numpy"):
        assert after[name] == before[name], name


@in_standin
def test_the_readme_gives_the_versions_the_first_cell_installed(record):
    assert {n: after for n, (_, after) in _readme_table().items()} == \
        {n: record["after"][n] for n in standin.ALLOWED_CHANGES}


@in_standin
def test_a_second_run_all_changes_nothing(record):
    assert record["after_again"] == record["after"]


@in_standin
def test_every_lower_bound_is_the_version_the_stand_in_runs(record):
    # lock (make lock, the first pass) holds the upper end; the stand-in holds the lower: each bound is tested
    after = record["after"]
    for name, low in _requirements().items():
        if name in UNTESTED_LOWER_BOUNDS:
            continue
        assert name in after, f"{name} is a dependency but not installed in the stand-in"
        assert _version(after[name]) == _version(low), (
            f"pyproject.toml says {name}>={low}, the stand-in runs {after[name]}: set the bound to what is tested")


def test_the_untested_lower_bounds_are_named_dependencies():
    assert set(UNTESTED_LOWER_BOUNDS) <= set(_requirements())
