"""The Vietnamese edition of the notebooks: built cell by cell from the English ones, so the two cannot drift.

Each English notebook `notebooks/<rel>.ipynb` has a translation file `notebooks/vi/translations/<stem>.yml`:

    notebook: 02_lora_from_scratch.ipynb          # the English notebook, relative to notebooks/
    cells:
      - id: 5c1d2e3f                              # the English cell's id
        en: |                                     # the English source this translation was made from
          ## Step 1 · the shapes of A and B
        vi: |                                     # its translation
          ## Bước 1 · kích thước của A và B

Every markdown cell has an entry. A code cell has one only when its comments or display strings are
translated, and then its code must stay the English code: the same syntax tree once string literals and
comments are set aside (`same_code`). When an English cell changes, its stored `en` no longer matches and
`problems` names the cell with a diff of what changed, until a contributor updates `vi` and `en`.

`build` writes `notebooks/vi/<rel>.ipynb` from the English notebook: the same cells, ids, tags and order, the
translated sources, and one extra code cell after the Colab cell that switches the kit to Vietnamese
(`lora_lab.set_language("vi")`: the checks, plots, tables and everything else the kit prints). `make notebooks-vi` builds and then executes them to store their outputs.

Command line: `python -m lora_lab.translations check [--sources]|skeleton|build [NOTEBOOK ...]`; `--sources`
checks the translation files only, not the built notebooks.
"""

from __future__ import annotations

import ast
import copy
import difflib
import io
import json
import re
import sys
import tokenize
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
VI = NOTEBOOKS / "vi"
TRANSLATIONS = VI / "translations"
LANGUAGE_CELL_ID = "vi-language"
LANGUAGE_CELL = ('# Từ đây, mọi thứ bộ công cụ in ra và vẽ ra, cả các hàm kiểm tra bài tập, đều bằng tiếng Việt, và số viết\n'
                 '# theo cách của tiếng Việt (everything the kit prints and draws, and the checks, in Vietnamese).\n'
                 'import lora_lab\n'
                 '\n'
                 'lora_lab.set_language("vi")')
# links inside the repository that must lead to the Vietnamese copy: .../notebooks/NN_*.ipynb
_EN_NOTEBOOK_LINK = re.compile(r"notebooks/(solutions/)?(\d\d_[A-Za-z0-9_]+\.ipynb)")

__all__ = ["english_notebooks", "translation_path", "vi_path", "same_code", "problems", "build", "skeleton"]


def english_notebooks() -> list[Path]:
    """The numbered English notebooks and their solutions, in order."""
    return sorted(NOTEBOOKS.glob("[0-9]*.ipynb")) + sorted((NOTEBOOKS / "solutions").glob("[0-9]*.ipynb"))


def translation_path(en: Path) -> Path:
    return TRANSLATIONS / f"{en.stem}.yml"


def vi_path(en: Path) -> Path:
    return VI / en.relative_to(NOTEBOOKS)


def _src(cell) -> str:
    s = cell["source"]
    return s if isinstance(s, str) else "".join(s)


def _read(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def load_translation(en: Path) -> dict[str, dict]:
    """{cell id: {"en": ..., "vi": ...}} from the notebook's translation file ({} when there is none yet)."""
    path = translation_path(en)
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {str(c["id"]): c for c in data.get("cells") or []}


# ----------------------------------------------------------------------------- code equivalence

def _python(src: str) -> str:
    """Notebook source as plain Python (IPython magics such as %time become calls)."""
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(src)


class _StripText(ast.NodeTransformer):
    """Blank every string literal; an f-string keeps only its {expressions}, in any order (word order differs)."""

    def visit_Constant(self, node):
        return ast.Constant(value="") if isinstance(node.value, str) else node

    def visit_JoinedStr(self, node):
        parts = sorted(ast.dump(self.visit(v.value)) for v in node.values if isinstance(v, ast.FormattedValue))
        return ast.Constant(value="f:" + "|".join(parts))


def _shape(src: str) -> str:
    return ast.dump(_StripText().visit(ast.parse(_python(src))))


def same_code(en: str, vi: str) -> bool:
    """True when vi is en with only comments and string literals changed (translated)."""
    try:
        return _shape(en) == _shape(vi)
    except SyntaxError:
        return False


def _has_text(src: str) -> bool:
    """Does a code cell have comments or string literals a reader sees (worth translating)?"""
    try:
        toks = list(tokenize.generate_tokens(io.StringIO(_python(src)).readline))
    except (tokenize.TokenError, SyntaxError):
        return True
    return any(t.type == tokenize.COMMENT or (t.type == tokenize.STRING and re.search(r"[A-Za-z]{3,} [A-Za-z]", t.string))
               for t in toks)


# ----------------------------------------------------------------------------- checks

def _diff(old: str, new: str) -> str:
    return "\n".join(difflib.unified_diff(old.splitlines(), new.splitlines(), "translated from", "English now",
                                          lineterm="", n=1))


def _first_line(src: str) -> str:
    line = next((ln for ln in src.splitlines() if ln.strip()), "")
    return line[:70]


def problems(en: Path, built_too: bool = True) -> list[str]:
    """What keeps en's translation from being current; [] when it is (and, with built_too, the built notebook too)."""
    nb, entries = _read(en), load_translation(en)
    name = en.relative_to(NOTEBOOKS).as_posix()
    out = []
    if not translation_path(en).exists():
        return [f"{name}: no translation file {translation_path(en).relative_to(ROOT)} "
                f"(start one with `python -m lora_lab.translations skeleton {en.relative_to(ROOT)}`)"]
    ids = {c["id"] for c in nb["cells"]}
    for cid in entries.keys() - ids:
        out.append(f"{name}: translation of cell {cid} whose English cell no longer exists: delete it")
    code_cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    colab_id = code_cells[0]["id"] if code_cells else None
    for cell in nb["cells"]:
        cid, src = cell["id"], _src(cell)
        where = f"{name} cell {cid} ({_first_line(src)!r})"
        entry = entries.get(cid)
        if entry is None:
            if cell["cell_type"] == "markdown" and src.strip():
                out.append(f"{where}: markdown cell not translated")
            continue
        if cid == colab_id:
            out.append(f"{where}: the Colab cell is the same in every notebook; do not translate it")
        if (entry.get("en") or "").rstrip("\n") != src.rstrip("\n"):
            out.append(f"{where}: the English cell changed since it was translated; update `vi`, then copy the "
                       f"new English into `en`:\n{_diff(entry.get('en') or '', src)}")
        vi = entry.get("vi")
        if not isinstance(vi, str) or not vi.strip():
            out.append(f"{where}: empty translation")
            continue
        if vi.rstrip("\n") == src.rstrip("\n"):
            out.append(f"{where}: `vi` is still the English text: translate it (or, for a code cell, delete the entry)")
        if cell["cell_type"] == "code" and not same_code(src, vi):
            out.append(f"{where}: the translated code differs from the English code beyond comments and strings")
        if cell["cell_type"] == "markdown":
            for m in _EN_NOTEBOOK_LINK.finditer(vi):
                if not vi[:m.start()].endswith("vi/"):
                    out.append(f"{where}: link to the English notebook {m.group(0)}; point it at notebooks/vi/...")
    if not out and built_too:
        built = build(en)
        have = vi_path(en)
        if not have.exists():
            out.append(f"{name}: {have.relative_to(ROOT)} not built: run `make notebooks-vi`")
        else:
            stored = _read(have)["cells"]
            want = [(c["id"], c["cell_type"], _src(c), c["metadata"].get("tags", [])) for c in built["cells"]]
            got = [(c.get("id"), c["cell_type"], _src(c), c["metadata"].get("tags", [])) for c in stored]
            if want != got:
                bad = next(w[0] for w, g in zip(want + [("(end)",)] * 9, got + [("(end)",)] * 9) if w != g)
                out.append(f"{name}: {have.relative_to(ROOT)} is older than its sources (first at cell {bad}): "
                           "run `make notebooks-vi`")
            elif any(c["cell_type"] == "code" and c.get("execution_count") is None and _src(c).strip()
                     for c in stored):
                out.append(f"{name}: {have.relative_to(ROOT)} has cells without outputs: run `make notebooks-vi`")
    return out


# ----------------------------------------------------------------------------- build and skeleton

def build(en: Path) -> dict:
    """The Vietnamese notebook (sources only, outputs cleared) from the English one and its translations."""
    nb, entries = _read(en), load_translation(en)
    vi = copy.deepcopy(nb)
    cells = []
    for cell in vi["cells"]:
        entry = entries.get(cell["id"])
        if entry is not None and isinstance(entry.get("vi"), str):
            cell["source"] = entry["vi"].rstrip("\n")
        if cell["cell_type"] == "code":
            cell["outputs"], cell["execution_count"] = [], None
        cells.append(cell)
        if cell["cell_type"] == "code" and not any(c["cell_type"] == "code" for c in cells[:-1]):
            cells.append({"cell_type": "code", "id": LANGUAGE_CELL_ID, "metadata": {}, "execution_count": None,
                          "outputs": [], "source": LANGUAGE_CELL})
    vi["cells"] = cells
    vi.setdefault("metadata", {}).setdefault("language_info", {})
    vi["metadata"].pop("jupytext", None)  # no paired .py: the translations file is the source
    return vi


def write_notebook(nb: dict, path: Path) -> None:
    import nbformat

    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nbformat.from_dict(nb), str(path))


class _Block(str):
    pass


yaml.add_representer(_Block, lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|"),
                     Dumper=yaml.SafeDumper)


def dump_translation(en: Path, entries: dict[str, dict]) -> str:
    nb = _read(en)
    cells = []
    for cell in nb["cells"]:
        e = entries.get(cell["id"])
        if e is not None:
            cells.append({"id": cell["id"], "en": _Block(e.get("en") or ""), "vi": _Block(e.get("vi") or "")})
    head = (f"# Vietnamese translation of notebooks/{en.relative_to(NOTEBOOKS).as_posix()}, cell by cell.\n"
            "# `en` is the English source each translation was made from; see lora_lab/translations.py.\n")
    body = yaml.dump({"notebook": en.relative_to(NOTEBOOKS).as_posix(), "cells": cells}, Dumper=yaml.SafeDumper,
                     allow_unicode=True, sort_keys=False, width=1000)
    return head + body


def skeleton(en: Path) -> Path:
    """Add an entry (vi = the English, to be translated) for every cell that needs one and has none."""
    nb, entries = _read(en), load_translation(en)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for cell in nb["cells"]:
        src = _src(cell)
        if cell["id"] in entries or not src.strip() or (code and cell["id"] == code[0]["id"]):
            continue
        if cell["cell_type"] == "markdown" or _has_text(src):
            entries[cell["id"]] = {"en": src, "vi": src}
    path = translation_path(en)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_translation(en, entries), encoding="utf-8")
    return path


def _pick(args: list[str]) -> list[Path]:
    if not args:
        return english_notebooks()
    out = []
    for a in args:
        p = Path(a).resolve()
        if p.suffix == ".yml":
            p = next(e for e in english_notebooks() if translation_path(e) == p)
        if p not in english_notebooks():
            raise SystemExit(f"{a}: not one of the English notebooks ({', '.join(e.name for e in english_notebooks())})")
        out.append(p)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in {"check", "skeleton", "build"}:
        print("usage: python -m lora_lab.translations check [--sources]|skeleton|build [NOTEBOOK ...]", file=sys.stderr)
        return 2
    flags = {a for a in argv[1:] if a.startswith("--")}
    command, paths = argv[0], _pick([a for a in argv[1:] if not a.startswith("--")])
    if command == "skeleton":
        for en in paths:
            print(skeleton(en).relative_to(ROOT))
        return 0
    if command == "build":
        for en in paths:
            write_notebook(build(en), vi_path(en))
            print(vi_path(en).relative_to(ROOT))
        return 0
    found = [p for en in paths for p in problems(en, built_too="--sources" not in flags)]
    print("\n".join(found) if found else f"{len(paths)} translations current")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
