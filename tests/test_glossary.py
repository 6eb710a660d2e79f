"""One term per concept, and numbers written the Vietnamese way, across everything the Vietnamese edition says.

notebooks/vi/GLOSSARY.md lists the chosen term for each concept and, in its column "Không dùng", the variants it
replaces. These tests read that column and look for the variants in every translation (notebooks/vi/translations/:
markdown, and the comments and strings of code cells), in README.vi.md and in the kit's Vietnamese message
catalogue. They also hold the glossary's rule for numbers: no number written the English way (14.75, 6,738,415,616)
in Vietnamese prose, and every number with a separator, read the Vietnamese way, is a number of the English source.
"""

import io
import json
import re
import tokenize
from pathlib import Path

import pytest

from lora_lab import catalogue
from lora_lab import translations as tr

ROOT = Path(__file__).resolve().parent.parent
GLOSSARY = tr.VI / "GLOSSARY.md"


# ----------------------------------------------------------------------------- what the glossary forbids

def _cells(row: str) -> list[str]:
    """The cells of a markdown table row, with escaped pipes (\\|) kept inside a cell."""
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row.strip().strip("|"))]


def forbidden() -> list[tuple[str, re.Pattern, str]]:
    """(the glossary's term, a variant as a pattern, the variant as written) for every variant in the table."""
    rows = [line for line in GLOSSARY.read_text(encoding="utf-8").splitlines() if line.startswith("|")]
    header = _cells(rows[0])
    column = header.index("Không dùng")
    found = []
    for row in rows[2:]:
        cells = _cells(row)
        term, variants = cells[0], cells[column]
        for literal, regex in re.findall(r'"([^"]+)"|(?<![\w`])/(.+?)/(?=,|\s*$)', variants):
            if literal:
                found.append((term, re.compile(rf"(?<!\w){re.escape(literal)}(?!\w)", re.IGNORECASE), literal))
            else:
                found.append((term, re.compile(regex, re.IGNORECASE), f"/{regex}/"))
    return found


def _prose(text: str, glosses: bool = True) -> str:
    """Prose with what the glossary does not govern blanked: code, links, math, placeholders and (with `glosses`)
    the English term written in parentheses beside a Vietnamese one."""
    blank = lambda m: " " * len(m.group(0))
    text = re.sub(r"```.*?```", blank, text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", blank, text)
    text = re.sub(r"\]\([^)]*\)", blank, text)
    text = re.sub(r"https?://\S+", blank, text)
    text = re.sub(r"\$\$.*?\$\$|\$[^$\n]*\$", blank, text, flags=re.S)
    text = re.sub(r"\{[^{}\s]*\}", blank, text)  # a message's {placeholders}
    return re.sub(r"\([A-Za-z][\x20-\x7e]*?\)", blank, text) if glosses else text  # "(checkpoint)"


def _code_text(src: str) -> str:
    """The comments and string literals of a code cell: the parts a translator writes."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(tr._python(src)).readline))
    except (tokenize.TokenError, SyntaxError):
        return src
    return "\n".join(t.string.lstrip("#") if t.type == tokenize.COMMENT else t.string
                     for t in tokens if t.type in (tokenize.COMMENT, tokenize.STRING))


_CODE_CELLS = set()


def _is_code(where: str) -> bool:
    return where in _CODE_CELLS


def vietnamese_texts() -> list[tuple[str, str, str]]:
    """(where, the Vietnamese text, its English source) for every translated cell, README.vi.md and every message."""
    out = []
    for en in tr.english_notebooks():
        kinds = {c["id"]: c["cell_type"] for c in json.loads(en.read_text(encoding="utf-8"))["cells"]}
        for cid, entry in tr.load_translation(en).items():
            code = kinds.get(cid) == "code"
            if code:
                _CODE_CELLS.add(f"{tr.translation_path(en).relative_to(ROOT)} cell {cid}")
            out.append((f"{tr.translation_path(en).relative_to(ROOT)} cell {cid}",
                        _code_text(entry["vi"]) if code else entry["vi"],
                        _code_text(entry["en"]) if code else entry["en"]))
    out.append(("README.vi.md", (ROOT / "README.vi.md").read_text(encoding="utf-8"),
                (ROOT / "README.md").read_text(encoding="utf-8")))
    for m in catalogue.read_catalogue("vi"):
        if m.id:
            out.append((f"{catalogue.catalogue_path('vi').relative_to(ROOT)}: {m.id[:60]!r}", m.string, m.id))
    return out


TEXTS = vietnamese_texts()
# the number rule governs prose: markdown, README.vi.md and the messages. A code cell's comments and strings are
# code (a comment's numbers are the code's; a string may be data, such as a colour "0.6"); what a cell prints is
# held by tests/test_translations.py
PROSE = [(where, vi, en) for where, vi, en in TEXTS if not _is_code(where)]


def test_the_glossary_lists_the_terms_the_edition_settled():
    terms = {term for term, *_ in forbidden()}
    for concept in ("hệ số co giãn", "zero point", "dữ liệu chỉ dẫn", "tập đánh giá", "lõi CPU", "điểm lưu",
                    "tính lại giá trị kích hoạt", "tỉ (nghìn triệu)", "hệ số tỉ lệ α/r", "lượt xuôi"):
        assert any(concept in t for t in terms), f"GLOSSARY.md has no variants listed for {concept!r}"
    assert len(forbidden()) >= 30


def test_no_text_uses_a_variant_the_glossary_replaces():
    rules = forbidden()
    found = []
    for where, vi, _ in TEXTS:
        text = _prose(vi)
        for term, pattern, variant in rules:
            for m in pattern.finditer(text):
                context = re.sub(r"\s+", " ", vi[max(0, m.start() - 30):m.end() + 30])
                found.append(f"{where}: {variant} (write {term!r}): …{context}…")
    assert not found, "\n".join(found)


def test_a_variant_is_found_where_it_is_used():
    rules = {variant: pattern for _, pattern, variant in forbidden()}
    assert rules["điểm không"].search(_prose("các điểm không mới cho ra đúng W"))
    assert rules["tỷ"].search(_prose("7 tỷ tham số"))
    checkpoint = next(p for v, p in rules.items() if "checkpoint(" in v)
    assert checkpoint.search(_prose("nó ghi một checkpoint ngẫu nhiên"))
    assert not checkpoint.search(_prose("một điểm lưu (checkpoint) trong `checkpoints/`, như checkpoint-200"))
    scale = next(p for v, p in rules.items() if v.startswith("/hệ số tỉ lệ"))
    assert scale.search("mỗi khối có hệ số tỉ lệ của khối") and not scale.search("hệ số tỉ lệ α/r")


# ----------------------------------------------------------------------------- numbers

# what comes before a number that is not a quantity: a version (torch 2.11, ≥ 0.20), a section (§3.2), code (r=0.5)
_NOT_A_QUANTITY = re.compile(r"(?i)(?:python|torch|transformers|peft|trl|bitsandbytes|datasets|accelerate|ipywidgets|"
                             r"babel|cuda|jupyterlab|nbval|tokenizers|huggingface-hub|pyarrow|phiên bản|version|"
                             r"≥|>=|==|<=|~=|§|mục|bảng|table|máy này có|giới hạn dưới|[\w)]=)[\s-]*$")
_NUMBER = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\d+,\d+)(?=[MBK]\b|[^\w.,]|[.,](?!\d)|$)")
# written the English way whatever the reader: two thousands groups with commas, a grouped number with a decimal
# point, or a decimal point followed by other than three digits (Vietnamese groups thousands in threes)
_ENGLISH_ONLY = re.compile(r"^(?:\d{1,3}(?:,\d{3}){2,}(?:\.\d+)?|\d{1,3}(?:,\d{3})+\.\d+|\d+\.(?:\d{1,2}|\d{4,}))$")


def _numbers(text: str, glosses: bool = True):
    """(number as written, where it starts) for every quantity with a separator in `text`'s prose."""
    prose = _prose(text, glosses)
    for m in _NUMBER.finditer(prose):
        if not _NOT_A_QUANTITY.search(prose[max(0, m.start() - 25):m.start()]):
            yield m.group(1), m.start()


def _around(text: str, at: int) -> str:
    return re.sub(r"\s+", " ", text[max(0, at - 30):at + 30])


def _english_value(number: str) -> float:
    return float(number.replace(",", ""))


def _vietnamese_value(number: str) -> float | None:
    if re.fullmatch(r"\d{1,3}(?:\.\d{3})*(?:,\d+)?", number):
        return float(number.replace(".", "").replace(",", "."))
    return None


def _english_numbers(text: str) -> set[float]:
    return {_english_value(n) for n, _ in _numbers(text, glosses=False)} | {
        float(n) for n in re.findall(r"(?<![\w.,])\d+(?![\w,.]\d)", text)}


def test_no_number_is_written_the_english_way():
    found = []
    for where, vi, _ in PROSE:
        for number, at in _numbers(vi):
            if _ENGLISH_ONLY.match(number):
                found.append(f"{where}: {number} (…{_around(vi, at)}…)")
    assert not found, "write numbers the Vietnamese way (GLOSSARY.md, Cách viết số):\n" + "\n".join(found)


def test_every_number_read_the_vietnamese_way_is_a_number_of_the_english():
    # "4.127 bit" where the English says 4.127 reads as four thousand; "1,200 dòng" where it says 1,200 reads as 1.2
    found = []
    for where, vi, en in PROSE:
        english = _english_numbers(en)
        for number, at in _numbers(vi):
            value = _vietnamese_value(number)
            if value is None or value not in english:
                found.append(f"{where}: {number} is not a number of the English text (…{_around(vi, at)}…)")
    assert not found, "\n".join(found)


@pytest.mark.parametrize("vi, en, ok", [
    ("14,75 GiB", "14.75 GiB", True), ("6.738.415.616 tham số", "6,738,415,616 parameters", True),
    ("4.127 bit", "4.127 bits", False), ("1,200 dòng", "1,200 rows", False), ("torch 2.11", "torch 2.11", True),
    ("lora_dropout=0.1", "lora_dropout=0.1", True), ("98,0%", "98.0%", True),
])
def test_the_number_rules_tell_the_two_ways_apart(vi, en, ok):
    english = _english_numbers(en)
    bad = [n for n, _ in _numbers(vi) if _ENGLISH_ONLY.match(n) or _vietnamese_value(n) not in english]
    assert (not bad) == ok, bad
