"""Every answer in tests/wrong_answers.py gets its verdict, in English and in Vietnamese, and every wrong one a
message that names the idea behind the mistake."""

import string

import pytest
import torch
from wrong_answers import CATALOGUE, RIGHT

from lora_lab import catalogue
from lora_lab import exercises as ex
from lora_lab.exercises import set_language

MESSAGES = {m.id: m.string for m in catalogue.read_catalogue("vi") if m.id}  # the Vietnamese catalogue

ENTRIES = [(check, *entry) for check, entries in CATALOGUE.items() for entry in entries]


@pytest.fixture(autouse=True)
def english_afterwards():
    yield
    set_language("en")


def _literal_pieces(template: str) -> list[str]:
    """The parts of a message template outside its {placeholders}, longest first."""
    pieces = [literal for literal, *_ in string.Formatter().parse(template)]
    return sorted((p.replace("{", "").replace("}", "").strip() for p in pieces if p.strip()), key=len, reverse=True)


def _vietnamese_marks(phrase: str) -> list[str]:
    """For each English template that holds `phrase`, the longest fixed piece of its Vietnamese translation."""
    templates = [t for t in MESSAGES if phrase in t]
    assert templates, f"{phrase!r} is in no message template: pick a phrase of the template, not of a value"
    return [_literal_pieces(MESSAGES[t])[0] for t in templates]


def test_every_check_has_right_and_wrong_answers_in_the_catalogue():
    assert set(CATALOGUE) == set(ex.EXERCISES)
    for check, entries in CATALOGUE.items():
        verdicts = [verdict for _, _, verdict, _ in entries]
        assert verdicts.count(RIGHT) >= 1 and len(verdicts) - verdicts.count(RIGHT) >= 3, check.exercise_id
    assert len(ENTRIES) >= 140


@pytest.mark.parametrize("check, label, answer, verdict, phrase", ENTRIES,
                         ids=[f"{c.exercise_id} {label}" for c, label, *_ in ENTRIES])
def test_each_answer_gets_its_verdict_in_both_languages(check, label, answer, verdict, phrase):
    torch.manual_seed(0)
    english = check(answer)
    assert english.status == verdict, f"{label}: {english!r}"
    if verdict == RIGHT:
        assert phrase is None
    else:
        assert phrase in english.message, f"{label}: the message does not name the idea ({phrase!r}): {english!r}"
    set_language("vi")
    torch.manual_seed(0)
    vietnamese = check(answer)
    assert vietnamese.status == verdict and repr(vietnamese).startswith("Bài tập ")
    if verdict != RIGHT:
        marks = _vietnamese_marks(phrase)
        assert any(m in vietnamese.message for m in marks), f"{label}: {vietnamese!r} lacks all of {marks}"
