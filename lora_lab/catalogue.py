"""The message catalogues, for contributors: extract the messages the package marks and merge them into each .po.

    python -m lora_lab.catalogue update

Babel extracts every `_("...")` and `N_("...")` of lora_lab (lora_lab.i18n explains them) and merges them into
lora_lab/locale/<lang>/LC_MESSAGES/lora_lab.po: a new message comes in untranslated, a changed one is marked fuzzy
(with the English it was translated from, as `#| msgid`), a removed one is dropped. Translate the new and fuzzy
entries (remove the `fuzzy` flag), keep every {placeholder}, and run tests/test_i18n.py.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from .i18n import DOMAIN, LANGUAGES, catalogue_path

__all__ = ["extract", "read_catalogue", "write_catalogue", "update"]

PACKAGE = Path(__file__).resolve().parent
KEYWORDS = {"_": None, "N_": None}  # Babel's keywords: the functions whose string argument is a message


def extract():
    """Every message the package marks, as a Babel Catalog (the template, .pot) with where each is used."""
    from babel.messages.catalog import Catalog
    from babel.messages.extract import extract_from_dir

    template = Catalog(domain=DOMAIN, project="lora-lab", charset="utf-8")
    for filename, lineno, message, comments, context in extract_from_dir(
            PACKAGE, method_map=[("**.py", "python")], keywords=KEYWORDS, comment_tags=("TRANSLATORS:",),
            strip_comment_tags=True):
        template.add(message, None, [(f"lora_lab/{filename}", lineno)], auto_comments=comments, context=context)
    return template


def read_catalogue(lang: str):
    """`lang`'s .po as a Babel Catalog."""
    from babel.messages.pofile import read_po

    with open(catalogue_path(lang), "rb") as f:
        return read_po(f, locale=lang, domain=DOMAIN)


def write_catalogue(catalog, lang: str) -> Path:
    """Write `catalog` to `lang`'s .po: in the order extracted, unwrapped, files named without line numbers (so
    that moving code does not touch the catalogue), no obsolete entries."""
    from babel.messages.pofile import write_po

    path = catalogue_path(lang)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    write_po(buf, catalog, width=0, ignore_obsolete=True, include_previous=True, include_lineno=False)
    path.write_bytes(buf.getvalue())
    return path


def update(lang: str = "vi") -> dict[str, int]:
    """Merge the messages the package uses now into `lang`'s catalogue; returns how many are new, fuzzy, dropped."""
    template = extract()
    catalog = read_catalogue(lang)
    before = {m.id for m in catalog if m.id}
    catalog.update(template, update_creation_date=False)
    after = {m.id for m in catalog if m.id}
    counts = {"messages": len(after), "new untranslated": sum(1 for m in catalog if m.id and not m.string),
              "fuzzy": sum(1 for m in catalog if m.id and m.fuzzy), "dropped": len(before - after)}
    write_catalogue(catalog, lang)
    return counts


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] != ["update"]:
        print("usage: python -m lora_lab.i18n update   (merge the package's messages into each catalogue)",
              file=sys.stderr)
        return 2
    for lang in LANGUAGES[1:]:
        counts = update(lang)
        print(f"{catalogue_path(lang).relative_to(PACKAGE.parent)}: "
              + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
