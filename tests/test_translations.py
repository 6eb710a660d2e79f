"""The Vietnamese edition: built from the English notebooks cell by cell, current, and complete.

The notebooks themselves run under nbval in `make test`'s second pass (the Colab stand-in); these tests hold
them to the English code and their translations to the English text.
"""

import json
import re
import tomllib
from pathlib import Path

import pytest

from lora_lab import translations as tr

ROOT = Path(__file__).resolve().parent.parent
REPO = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
SLUG = REPO.removeprefix("https://github.com/")
COLAB = "https://colab.research.google.com/github/"
ENGLISH = tr.english_notebooks()


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _src(cell):
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def test_every_english_notebook_has_a_vietnamese_one():
    assert len(ENGLISH) == 18
    assert sorted(p.relative_to(tr.VI) for p in tr.VI.rglob("[0-9]*.ipynb")) == \
        sorted(p.relative_to(tr.NOTEBOOKS) for p in ENGLISH)


@pytest.mark.parametrize("en", ENGLISH, ids=lambda p: p.stem)
def test_translation_is_current(en):
    # an English cell changed, a markdown cell untranslated, code changed beyond comments and strings, a link
    # to an English notebook, or a built notebook older than its sources: each named, with what to do
    found = tr.problems(en)
    assert not found, "\n\n".join(found)


@pytest.mark.parametrize("en", ENGLISH, ids=lambda p: p.stem)
def test_vietnamese_notebook_runs_the_english_code(en):
    vi = _cells(tr.vi_path(en))
    english = _cells(en)
    assert [c["id"] for c in vi if c["id"] != tr.LANGUAGE_CELL_ID] == [c["id"] for c in english]
    for e, v in zip(english, [c for c in vi if c["id"] != tr.LANGUAGE_CELL_ID]):
        assert e["cell_type"] == v["cell_type"] and e["metadata"].get("tags") == v["metadata"].get("tags")
        if e["cell_type"] == "code":
            assert tr.same_code(_src(e), _src(v)), f"cell {e['id']}"
    code = [c for c in vi if c["cell_type"] == "code"]
    assert _src(code[0]) == _src([c for c in english if c["cell_type"] == "code"][0])  # the Colab cell, as is
    assert code[1]["id"] == tr.LANGUAGE_CELL_ID and 'set_language("vi")' in _src(code[1])


def test_the_drift_check_names_a_changed_english_cell(tmp_path, monkeypatch):
    en = ENGLISH[2]
    nb = json.loads(en.read_text())
    cell = next(c for c in nb["cells"] if c["cell_type"] == "markdown" and len(_src(c)) > 200)
    cell["source"] = _src(cell).replace("LoRA", "LoRA (changed)", 1)
    changed = tmp_path / "notebooks" / en.name
    changed.parent.mkdir()
    changed.write_text(json.dumps(nb))
    monkeypatch.setattr(tr, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(tr, "translation_path", lambda p: tr.TRANSLATIONS / f"{p.stem}.yml")
    found = tr.problems(changed, built_too=False)
    assert len(found) == 1 and cell["id"] in found[0] and "English cell changed" in found[0]
    assert "+" in found[0] and "LoRA (changed)" in found[0]  # the diff of what changed


def test_code_may_change_only_comments_and_strings():
    en = 'x = f(2)  # two\nprint(f"{x:.3f} bytes", "total")'
    assert tr.same_code(en, 'x = f(2)  # hai\nprint(f"{x:.3f} byte", "tổng")')
    assert tr.same_code(en, 'x = f(2)\nprint(f"tổng {x:.3f} byte", "tổng")')  # word order may move
    assert not tr.same_code(en, 'x = f(3)  # hai\nprint(f"{x:.3f} byte", "tổng")')
    assert not tr.same_code(en, 'x = f(2)\nprint(f"{x + 1:.3f} byte", "tổng")')
    assert not tr.same_code(en, 'x = f(2)\nprint(f"{x:.3f} byte")')


@pytest.mark.parametrize("en", ENGLISH, ids=lambda p: p.stem)
def test_vietnamese_links_lead_to_vietnamese_notebooks(en):
    # badges, absolute links, outputs and stored warnings: tests/test_notebooks.py, which covers notebooks/vi too
    vi = tr.vi_path(en)
    for cell in _cells(vi):
        if cell["cell_type"] != "markdown":
            continue
        for target in re.findall(r"\]\(([^)\s]+)\)", _src(cell)):
            if target.startswith((f"{REPO}/blob/main/", f"{REPO}/tree/main/")):
                local = target.split("/main/", 1)[1].split("#")[0]
                assert (ROOT / local).exists(), target
                assert not re.match(r"notebooks/(solutions/)?\d\d_", local), f"{vi.name} links to English {local}"


def test_exercise_verdicts_are_in_vietnamese():
    shown = [o.get("data", {}).get("text/plain", "") for p in tr.VI.rglob("[0-9]*.ipynb") for c in _cells(p)
             for o in c.get("outputs", [])]
    shown = ["".join(s) if isinstance(s, list) else s for s in shown]
    assert any(s.startswith("Bài tập 00.1") for s in shown)
    assert not any(s.startswith("Exercise ") for s in shown)


def test_readme_vi_has_the_english_sections_and_badges():
    en, vi = (ROOT / "README.md").read_text(), (ROOT / "README.vi.md").read_text()
    assert "README.vi.md" in en and "make lab" in vi and "make test" in vi
    assert len(re.findall(r"^## ", vi, re.M)) == len(re.findall(r"^## ", en, re.M))
    for p in ENGLISH[:9]:
        assert f"{COLAB}{SLUG}/blob/main/notebooks/vi/{p.name}" in vi, p.name
    assert "notebooks/vi/GLOSSARY.md" in vi
