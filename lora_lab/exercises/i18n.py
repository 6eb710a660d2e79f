"""The language the exercise checks speak: English (the default) or Vietnamese.

Every message a check shows is written as an English template with keyword placeholders, wrapped in
`_()`: `_("you counted {got:,}").format(got=n)`. `_` returns the template in the current language, so
the placeholders are filled after translation and a translator may move them. The Vietnamese templates
live in `lora_lab.exercises.vi`, keyed by the English ones.

    from lora_lab.exercises import set_language
    set_language("vi")  # every check from now on answers in Vietnamese
"""

from __future__ import annotations

__all__ = ["LANGUAGES", "set_language", "get_language"]

LANGUAGES = ("en", "vi")
_language = "en"


def set_language(lang: str) -> None:
    """Switch the exercise checks to `lang`: "en" (English) or "vi" (Vietnamese).

    Raises ValueError for any other value. The switch holds for the whole Python process (the notebook's
    kernel) until the next call; a verdict already shown keeps the language it was made in.
    """
    global _language
    if not isinstance(lang, str) or lang not in LANGUAGES:
        raise ValueError(f"set_language(lang={lang!r}): lang is not accepted; choose one of {LANGUAGES}")
    _language = lang


def get_language() -> str:
    """The language the checks speak now: "en" or "vi"."""
    return _language


def _(template: str) -> str:
    """`template` (an English message) in the current language; the English itself if it has no translation."""
    if _language == "en":
        return template
    from .vi import MESSAGES

    return MESSAGES.get(template, template)
