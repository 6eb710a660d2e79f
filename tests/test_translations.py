"""The Vietnamese edition: built from the English notebooks cell by cell, current, and complete.

The notebooks themselves run under nbval in `make test`'s second pass (the Colab stand-in); these tests hold
them to the English code and their translations to the English text.
"""

import html as html_module
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


# ----------------------------------------------------------------------------- what English is left, and why

# English words the Vietnamese edition keeps as its own (GLOSSARY.md), and names: of libraries, of the kit's command
# and profiles, of tensors and units. A word here is never counted as English left in an output.
KEPT = {"adapter", "adapters", "token", "tokens", "kernel", "prompt", "prompts", "logit", "logits", "entropy",
        "gradient", "grad", "absmax", "epoch", "dropout", "buffer", "seed", "offset", "scale", "scales", "shard",
        "rank", "nat", "batch", "byte", "bytes", "bit", "bits", "zero", "point", "tensor", "blocksize", "softmax",
        "query", "key", "value", "attention", "gaussian", "lora", "peft", "bitsandbytes", "transformers", "notebook",
        "dtype", "float", "tiny", "finetune", "gib", "mib", "gb", "mb", "kb", "tb", "gpu", "cpu", "ddp", "fsdp", "rms"}

# Where a Vietnamese notebook prints English on purpose: (notebook, cell id, pattern of the English piece, reason).
# Anything else English in the stored outputs fails the test below; an entry that no longer matches anything fails too.
ENGLISH_LEFT = [
    ("03_lora_vs_peft", "4513e38b", r".*",
     "PEFT's own print_trainable_parameters() line, and lora_lab's printed the same way beside it to compare the two"),
    ("03_lora_vs_peft", "831fc610", r".*", "PEFT's error message (error messages stay English)"),
    ("03_lora_vs_peft", "d181dc51", r".*", "the kit's error message (error messages stay English)"),
    ("03_lora_vs_peft", "f2fc50da", r".*", "error messages of PEFT, transformers and TRL, shown to be recognised"),
    ("03_lora_vs_peft", "bbc30478", r".*", "PEFT's error message"),
    ("05_qlora_from_scratch", "ec53c0bc", r".*", "the kit's source code, printed with inspect.getsource"),
    ("05_qlora_from_scratch", "a981ad86", r"^(the|answer|is|cheese)$", "tokens of a training row: the data is English"),
    ("05_qlora_from_scratch", "ec01b8fd", r"count|larger|repeat|sentiment", "the dataset's own task names"),
    ("06_qlora_finetune_llama2", "f1abee92", r".*", "FinetuneConfig's setting names and values, as Python writes them"),
    ("06_qlora_finetune_llama2", "58f2e62a", r".*", "prompts of the evaluation split: the data is English"),
    ("06_qlora_finetune_llama2", "widgets", r"^What is the first word in", "a prompt of the evaluation split, above its replies"),
    ("08_fsdp_qlora", "91cc17f7", r".*", "the kit's error messages for refused settings (error messages stay English)"),
    ("01_low_rank_intuition_solutions", "9bddfb05", r"^delta$", "a name from the exercise's code"),
    ("03_lora_vs_peft_solutions", "706ab51a", r"^Wq, Wk$", "the names of GPT-2's three projections"),
    ("03_lora_vs_peft_solutions", "9bb3b671", r"^model$", "code the learner runs: print(model)"),
    ("04_nf4_from_scratch_solutions", "c40c478c", r"^(table|code)$", "code: table[code]"),
    ("07_beyond_lora_solutions", "70871b75", r"^out, in$", "a weight's shape in PyTorch's words, (out, in)"),
    ("07_beyond_lora_solutions", "21283c19", r"^scaling$", "the layer's attribute, scaling = α/r"),
    ("08_fsdp_qlora_solutions", "11a96afc", r"^rows$", "a formula in code: ceil(rows / N)"),
    ("08_fsdp_qlora_solutions", "161ceb26", r"^rows$", "a formula in code: ceil(rows / world_size)"),
    ("08_fsdp_qlora_solutions", "490e3e84", r"^block$", "code: absmax[block]"),
]

_WORD = re.compile(r"(?<![\w.\-/])[A-Za-z]+(?:'[a-z]+)?(?![\w/(]|\.\w|-\w)")
# a line that is a Python value (a dict, a list, a module's repr, a figure), shown as Python shows it
_PYTHON_VALUE = re.compile(r"^\s*(?:[\[{(<'\"]|\w+\(|\w+=|\)|\w+: \w+\()")
# short English words that are no Vietnamese syllable (a longer word alone counts as English when the English prints it)
_SHORT_ENGLISH = {"on", "off", "of", "the", "and", "at", "by", "is", "are", "yes", "no", "not", "per", "vs", "all", "new",
                  "old", "for", "its", "was", "has", "with"}
_QUOTED = re.compile(r"`[^`]*`|'[^']*'|\"[^\"]*\"")
# numbers only English writes: two comma groups, a grouped number with a decimal point, a decimal point followed by
# other than three digits; an exercise's number ("Bài tập 00.1") is a name, not a quantity
_ENGLISH_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3}){2,}(?:\.\d+)?|\d{1,3}(?:,\d{3})+\.\d+|\d+\.(?:\d{1,2}|\d{4,}))"
                             r"(?![\w.,]?\d)")


def _html_text(html: str) -> str:
    """What a reader sees of an HTML output: its text, one table cell or block per line."""
    return html_module.unescape(re.sub(r"[ \t]+", " ", re.sub(r"<[^>]+>", "\n", html)))


def _outputs(cell) -> list[str]:
    texts = []
    for o in cell.get("outputs", []):
        data = o.get("data", {})
        if o["output_type"] == "stream":
            texts.append(_src({"source": o["text"]}))
        elif o["output_type"] in ("execute_result", "display_data"):
            plain = _src({"source": data.get("text/plain", "")})
            if "text/html" in data and plain.startswith("<IPython.core.display.HTML"):  # the fine-tune's progress table
                texts.append(_html_text(_src({"source": data["text/html"]})))
            else:
                texts.append(plain)
        elif o["output_type"] == "error":
            texts.append(f"{o['ename']}: {o['evalue']}")
    return texts


def _widget_texts(path) -> list[str]:
    """The words of the sliders a notebook stored (their labels, stops and the text each view shows)."""
    state = json.loads(path.read_text(encoding="utf-8")).get("metadata", {}).get("widgets", {})
    texts = []
    for model in state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {}).values():
        fields = model.get("state", {})
        texts += [_html_text(fields[f]) for f in ("value", "description") if isinstance(fields.get(f), str)]
        texts += [" ".join(str(o) for o in fields.get("_options_labels", []))]
    return texts


def _english_pieces(line: str, english: str) -> list[str]:
    """Runs of English words in a Vietnamese output line that the English notebook's same cell also prints."""
    if _PYTHON_VALUE.match(line):
        return []
    line = _QUOTED.sub(lambda m: " " * len(m.group(0)), line)
    words = [(m.start(), m.end(), m.group(0)) for m in _WORD.finditer(line)
             if len(m.group(0)) > 1 and m.group(0).lower() not in KEPT and not re.search(r"[a-z][A-Z]", m.group(0))]
    runs, run = [], []
    for w in words:  # neighbours joined by spaces or light punctuation form a run
        if run and line[run[-1][1]:w[0]].strip(" ,:;()") == "":
            run.append(w)
        else:
            runs.append(run)
            run = [w]
    runs.append(run)
    found = []
    for run in filter(None, runs):
        text = line[run[0][0]:run[-1][1]]
        if len(run) == 1:
            word = run[0][2]
            if (len(word) >= 4 or word in _SHORT_ENGLISH) and word.islower() \
                    and re.search(rf"(?<![\w.]){re.escape(word)}(?![\w(])", english):
                found.append(word)
        elif text in english:
            found.append(text)
        else:
            found += [line[a[0]:b[1]] for a, b in zip(run, run[1:]) if line[a[0]:b[1]] in english]
    return found


def english_left() -> list[tuple[str, str, str, str]]:
    """(notebook, cell id, English piece, the line) for every English piece a Vietnamese notebook's outputs print."""
    out = []
    for en in ENGLISH:
        english_cells = {c["id"]: c for c in _cells(en)}
        for cell in _cells(tr.vi_path(en)):
            if cell["cell_type"] != "code" or cell["id"] not in english_cells:
                continue
            english = "\n".join(_outputs(english_cells[cell["id"]]))
            for text in _outputs(cell):
                out += _english_in(en.stem, cell["id"], text, english)
        # the sliders' stored views, against every slider text of the English notebook
        english = "\n".join(_widget_texts(en))
        for text in _widget_texts(tr.vi_path(en)):
            out += _english_in(en.stem, "widgets", text, english)
    return out


def _english_in(stem: str, cid: str, text: str, english: str) -> list[tuple[str, str, str, str]]:
    """(stem, cid, English piece, line) for the English words and English-format numbers of an output `text`."""
    out = []
    for line in text.splitlines():
        out += [(stem, cid, piece, line.strip()) for piece in _english_pieces(line, english)]
        if not _PYTHON_VALUE.match(line):
            # a Python list inside a line ([6.3412, 6.0763]) keeps Python's numbers, as a whole list does
            shown = re.sub(r"Bài tập \d\d\.\d|\[[^\]]*\]", "", _QUOTED.sub("", line))
            out += [(stem, cid, m.group(1), line.strip()) for m in _ENGLISH_NUMBER.finditer(shown)]
    return out


def _allowed(stem: str, cid: str, piece: str) -> str | None:
    return next((reason for nb, c, pattern, reason in ENGLISH_LEFT
                 if nb == stem and c == cid and re.search(pattern, piece)), None)


LEFT = english_left()


def test_the_vietnamese_notebooks_print_no_english_but_what_is_listed():
    # words and English-format numbers in the stored outputs of every Vietnamese notebook, found by comparing each
    # cell's outputs with the English notebook's: a learner reads Vietnamese, except code, library error messages and
    # the data (ENGLISH_LEFT says which and why). Translate a new one (the cell's strings in its translations file,
    # the kit's messages in the catalogue, a number through num()), or list it with a reason.
    new = [f"{stem} cell {cid}: {piece!r} in {line[:120]!r}" for stem, cid, piece, line in LEFT
           if _allowed(stem, cid, piece) is None]
    assert not new, "English in the Vietnamese notebooks' outputs:\n" + "\n".join(new)


def test_every_listed_english_is_still_printed():
    stale = [(nb, c, pattern) for nb, c, pattern, _ in ENGLISH_LEFT
             if not any(stem == nb and cid == c and re.search(pattern, piece) for stem, cid, piece, _ in LEFT)]
    assert not stale, f"ENGLISH_LEFT lists English no notebook prints any more: remove {stale}"


def test_the_english_finder_finds_what_a_learner_would_see():
    english = "memory estimate (per process):\nweights  3.100 MiB\nloss: 6.690 at step 1"
    assert _english_pieces("memory estimate (per process):", english) == ["memory estimate (per process"]
    assert _english_pieces("weights  3,100 MiB", english) == ["weights"]
    assert _english_pieces("giá trị mất mát: 6,690 ở bước 1", english) == []
    assert _english_pieces("{'device': 'cpu'}", "{'device': 'cpu'}") == []  # a Python value
    assert _english_pieces("adapter của lora_lab, 4 tensor", "the adapter, 4 tensors") == []  # the glossary's terms
    assert [m.group(1) for m in _ENGLISH_NUMBER.finditer("14.75 GiB, 6,738,415,616 và 4,127 bit, 1.024 token")] == [
        "14.75", "6,738,415,616"]
