"""The notebooks' contract: Colab badge to their own path, a guarded install first, paired .py in sync."""

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))
NOTEBOOKS = [p for p in NOTEBOOKS if ".ipynb_checkpoints" not in p.parts]  # English and Vietnamese alike
ENGLISH = [p for p in NOTEBOOKS if "vi" not in p.relative_to(ROOT).parts]  # vi/ is built: no paired .py
REPO = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
SLUG = REPO.removeprefix("https://github.com/")
COLAB = "https://colab.research.google.com/github/"


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _src(cell):
    return "".join(cell["source"])


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_badge_points_at_this_notebook(path):
    first = _cells(path)[0]
    assert first["cell_type"] == "markdown" and _src(first).startswith("# ")
    links = re.findall(re.escape(COLAB) + r"[^)\s]+", _src(first))
    rel = path.relative_to(ROOT).as_posix()
    assert links == [f"{COLAB}{SLUG}/blob/main/{rel}"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_first_code_cell_installs_only_in_colab(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code"]
    src = _src(code[0])
    assert 'if "google.colab" in sys.modules:' in src
    assert f"{REPO}.git" in src and '"pip", "install"' in src and "-c" not in src.split()  # never the lock
    outside = [line for line in src.splitlines() if '"install"' in line or '"clone"' in line]
    assert outside and all(line.startswith(" ") for line in outside)  # only inside the guard
    # (tests/test_install.py runs this cell twice with a simulated google.colab)


@pytest.mark.parametrize("path", ENGLISH, ids=lambda p: p.name)
def test_paired_py_file_is_in_sync(path):
    import jupytext

    py = path.with_suffix(".py")
    assert py.exists(), f"{py.name} missing: pair with `jupytext --set-formats ipynb,py:percent`"
    from_py = [(c.cell_type, c.source.strip()) for c in jupytext.read(py).cells]
    from_nb = [(c["cell_type"], _src(c).strip()) for c in _cells(path)]
    assert from_py == from_nb, f"{path.name} and {py.name} differ: run `make notebooks`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_with_outputs(path):
    code = [c for c in _cells(path) if c["cell_type"] == "code" and _src(c).strip()]
    assert all(c["execution_count"] is not None for c in code), "run `make notebooks` before committing"


def test_readme_badges_match_notebooks():
    readme = (ROOT / "README.md").read_text()
    for link in re.findall(re.escape(COLAB) + r"[^)\s]+", readme):
        rel = link.removeprefix(f"{COLAB}{SLUG}/blob/main/")
        assert (ROOT / rel).exists(), link
    top = [p for p in NOTEBOOKS if p.parent.name == "notebooks"]
    for p in top:
        assert f"{COLAB}{SLUG}/blob/main/notebooks/{p.name}" in readme, f"README has no badge for {p.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_links_work_in_colab(path):
    # Colab opens one notebook from GitHub: a relative link (../00_start_here.ipynb) leads nowhere there
    for cell in _cells(path):
        if cell["cell_type"] == "markdown":
            for target in re.findall(r"\]\(([^)\s]+)\)", _src(cell)):
                assert target.startswith(("https://", "#")), f"{path.name}: relative link {target!r}"
                if target.startswith(f"{REPO}/blob/main/"):
                    assert (ROOT / target.removeprefix(f"{REPO}/blob/main/")).exists(), target


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_warning_or_error(path):
    # red text in a committed notebook tells a learner to act (install this, fix that): never store one
    for i, cell in enumerate(_cells(path)):
        for out in cell.get("outputs", []):
            assert out.get("name") != "stderr", f"{path.name} cell {i} stores stderr: {''.join(out['text'])[:200]}"
            assert out["output_type"] != "error", f"{path.name} cell {i} stores an error"


# Learners run the notebooks in Colab or from a wheel, where only the installed package exists: no
# benchmarks/, tests/ or data/ beside it. The Colab stand-in pass of `make test` runs every notebook from a
# folder outside the repository against the installed kit, which catches any read outside it; this test
# names the cell at once, without a run.
_OUTSIDE = re.compile(r"(^|[\"'/ ])(\.\./|(benchmarks|tests|data|notebooks)/)")
_CLONE_FOLDERS = {"benchmarks", "tests", "data", "notebooks", ".."}


def _reaches_outside(src: str) -> list[str]:
    import ast

    found = []
    try:
        tree = ast.parse(src)
    except SyntaxError:  # IPython magics: fall back to the text
        return ["a line mentions " + m.group(2) for m in _OUTSIDE.finditer(src)]
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "://" not in node.value \
                and _OUTSIDE.search(node.value):
            found.append(f"the path {node.value!r}")
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):  # Path / "benchmarks"
            found += [f"the path part {side.value!r}" for side in (node.left, node.right)
                      if isinstance(side, ast.Constant) and side.value in _CLONE_FOLDERS]
        elif isinstance(node, ast.Attribute) and node.attr == "parent" and isinstance(node.value, ast.Name) \
                and node.value.id in {"DATA_DIR", "EMBEDDED_MODEL", "EMBEDDED_DATASET"}:
            found.append(f"{node.value.id}.parent (the clone's top folder; in an install it is site-packages)")
        elif isinstance(node, ast.Name) and node.id == "__file__":
            found.append("__file__ (a notebook has none)")
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_notebook_needs_only_the_installed_kit(path):
    bad = []
    for cell in _cells(path):
        if cell["cell_type"] == "code":
            bad += [f"cell {cell['id']}: {what}" for what in _reaches_outside(_src(cell))]
    assert not bad, (f"{path.relative_to(ROOT)} reads outside the installed package (in Colab only the kit "
                     "installed by the first cell exists; move what it needs into lora_lab):\n" + "\n".join(bad))


def test_the_outside_check_catches_the_old_benchmark_cell():
    old = ('spec = importlib.util.spec_from_file_location("bench_lora", DATA_DIR.parent / "benchmarks" / '
           '"bench_lora.py")')
    assert len(_reaches_outside(old)) == 2  # DATA_DIR.parent, and / "benchmarks"
    assert _reaches_outside('open("../data/tiny-instruct/train.jsonl")')
    assert not _reaches_outside('from lora_lab import bench\nprint("see https://github.com/x/y/tests/")')
