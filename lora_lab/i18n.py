"""The language the kit speaks to a learner, English (the default) or Vietnamese, and how it writes numbers.

One setting switches everything the kit shows a learner: the exercise checks' verdicts, the plots' labels, the
widgets', printed tables, the memory estimate, the fine-tune's progress lines, `env`'s advice and `bnb_cpu`'s
explanation.

    import lora_lab
    lora_lab.set_language("vi")      # also lora_lab.exercises.set_language; `lora-lab --language vi ...`

Error messages and warnings stay English, as PEFT's and transformers' do: they are what a learner searches for.

Messages follow GNU gettext. English text in the source is marked `_("...")` (or `N_("...")` for a label kept in a
constant, shown with `translate(label)`), and the translations live in a catalogue,
`lora_lab/locale/vi/LC_MESSAGES/lora_lab.po`, read with Babel at first use. A message is a template with keyword
placeholders, filled after translation, so a translator may move them: `_("{n:,} rows").format(n=n)`.
`python -m lora_lab.catalogue update` extracts the messages (Babel) and merges them into the catalogue: a new
message comes in untranslated, a changed one fuzzy, a removed one is dropped; tests/test_i18n.py fails until each
is done.

Numbers follow the language too. English writes Python's 6,738,415,616 and 14.75; Vietnamese writes 6.738.415.616
and 14,75 (Babel's `vi` locale: "." groups thousands, "," marks decimals). A message's number placeholders do so by
themselves; elsewhere `num(x)` does: `f"{num(n):,} rows"`, `f"{num(share):.1%}"`. The format spec is Python's, so
the digits are the same in both languages and only the two symbols differ. What is shown as Python (a list, a dict,
a tensor, `{x!r}`) keeps Python's notation, as code does.
"""

from __future__ import annotations

import gettext
import io
import numbers
import string
from functools import lru_cache
from pathlib import Path

__all__ = ["LANGUAGES", "set_language", "get_language", "num", "format_number", "N_", "translate"]

LANGUAGES = ("en", "vi")
DOMAIN = "lora_lab"
LOCALE_DIR = Path(__file__).resolve().parent / "locale"
_language = "en"


def set_language(lang: str) -> None:
    """Switch what the kit shows a learner to `lang`: "en" (English) or "vi" (Vietnamese).

    Raises ValueError for any other value (and changes nothing). The setting holds for the whole Python process
    (the notebook's kernel) until the next call; what was already shown keeps the language it was made in.
    """
    global _language
    if not isinstance(lang, str) or lang not in LANGUAGES:
        raise ValueError(f"set_language(lang={lang!r}): lang is not accepted; choose one of {LANGUAGES}")
    _language = lang


def get_language() -> str:
    """The language the kit speaks now: "en" or "vi"."""
    return _language


def catalogue_path(lang: str) -> Path:
    """The gettext catalogue (.po) of `lang`'s messages."""
    return LOCALE_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


@lru_cache(maxsize=None)
def translations(lang: str) -> gettext.NullTranslations:
    """`lang`'s catalogue as a gettext translations object: the .po read by Babel, compiled in memory.

    English is the source language: its messages are the text itself (NullTranslations). Fuzzy entries (a
    message changed since it was translated) are left out, so they show in English until translated again.
    """
    if lang == "en":
        return gettext.NullTranslations()
    from babel.messages.mofile import write_mo
    from babel.messages.pofile import read_po

    with open(catalogue_path(lang), "rb") as f:
        catalog = read_po(f, locale=lang, domain=DOMAIN)
    mo = io.BytesIO()
    write_mo(mo, catalog, use_fuzzy=False)
    mo.seek(0)
    return gettext.GNUTranslations(mo)


def N_(message: str) -> str:
    """Mark `message` for translation without translating it here (a label kept in a constant or a file)."""
    return message


def _(message: str) -> Message:
    """`message` (English, a string literal) in the current language, as a template whose .format() writes numbers
    for the reader."""
    return Message(translations(_language).gettext(message))


def translate(label: str) -> Message:
    """A label marked with N_() where it was written, in the current language (the label itself if it has none)."""
    return Message(translations(_language).gettext(label))


# ----------------------------------------------------------------------------- numbers

@lru_cache(maxsize=None)
def _symbols(lang: str) -> dict[int, str]:
    """str.translate table from Python's number symbols ("," and ".") to `lang`'s (CLDR's, through Babel)."""
    from babel.numbers import get_decimal_symbol, get_group_symbol

    return {ord(","): get_group_symbol(lang), ord("."): get_decimal_symbol(lang)}


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def format_number(value, spec: str = "") -> str:
    """format(value, spec) written the way the current language writes numbers.

    value: an int, a float, or a one-element tensor/array (its .item()); spec: Python's format spec ("," for
    thousands, ".2f", ".1%", ".2e", "10.3f", ...). English gives exactly format(value, spec); Vietnamese the same
    digits with "." grouping thousands and "," marking decimals. Raises TypeError for a value that is not a number.
    """
    if not _is_number(value) and hasattr(value, "item"):
        value = value.item()
    if not _is_number(value):
        raise TypeError(f"format_number(value={value!r}): value is not a number (an int, a float or a 0-d tensor)")
    text = format(value, spec)
    return text if _language == "en" else text.translate(_symbols(_language))


class num:
    """A number that formats itself in the current language: f"{num(n):,} rows", f"{num(p):.1%}", str(num(x)).

    `num(x)` wraps an int, a float or a 0-d tensor; the f-string's format spec is Python's (see format_number).
    """

    __slots__ = ("value",)

    def __init__(self, value):
        if not _is_number(value) and hasattr(value, "item"):
            value = value.item()
        if not _is_number(value):
            raise TypeError(f"num(value={value!r}): value is not a number (an int, a float or a 0-d tensor)")
        self.value = value

    def __format__(self, spec: str) -> str:
        return format_number(self.value, spec)

    def __str__(self) -> str:
        return format_number(self.value)

    def __repr__(self) -> str:
        return f"num({self.value!r})"


class _Formatter(string.Formatter):
    """str.format, with every number placeholder written for the reader (format_number)."""

    def format_field(self, value, format_spec):
        return format_number(value, format_spec) if _is_number(value) else format(value, format_spec)


_FORMATTER = _Formatter()


class Message(str):
    """A translated message template: a str whose .format() writes number placeholders in the current language.

    A placeholder with a conversion ({x!r}, {x!s}) is shown as Python shows it.
    """

    __slots__ = ()

    def format(self, *args, **kwargs) -> str:
        return _FORMATTER.vformat(str(self), args, kwargs)
