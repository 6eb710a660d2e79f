"""What every exercise check shares: the Verdict it returns and the `_check` decorator that makes one.

A check's body takes the learner's answer, asserts, and returns a success message. `_check` turns that
into a function returning a Verdict: a stub that still raises NotImplementedError gets "not done yet"
(so a notebook with open exercises runs top to bottom), a right answer "correct", a wrong one "not yet
right" with the AssertionError's message, which says what to look at without giving the answer away.
Every message goes through `_()`, so the checks speak the language `set_language` chose.
"""

from __future__ import annotations

import functools
import html
import math
import re
import traceback
import warnings
from dataclasses import dataclass

import torch

from .i18n import _

__all__ = ["Verdict"]

# "Exercise 00.1 · compute_dtype_for": the notebook, the exercise's number in it, and the answer's name
_LABEL = re.compile(r"Exercise (?P<number>\d\d\.\d+) · (?P<name>\w+)")


@dataclass
class Verdict:
    """What a check concluded: passed is True (correct), None (not done yet) or False (wrong, message says why).

    A wrong answer is a verdict, not an exception, so "Run all" goes on to the next exercise; in Jupyter it
    shows as a coloured box (green, grey, red). `exercise` is the English label, e.g. "Exercise 00.1 ·
    compute_dtype_for", and `status` is "correct", "not done" or "wrong" in every language, for graders.
    """

    exercise: str
    passed: bool | None
    message: str

    @property
    def status(self) -> str:
        return {True: "correct", None: "not done", False: "wrong"}[self.passed]

    def __bool__(self) -> bool:
        return self.passed is True

    def title(self) -> str:
        """The label in the current language: "Exercise 00.1 · compute_dtype_for", "Bài tập 00.1 · …"."""
        m = _LABEL.fullmatch(self.exercise)
        return _("Exercise {number} · {name}").format(**m.groupdict()) if m else self.exercise

    def __repr__(self) -> str:
        label = {True: _("correct"), None: _("not done yet"), False: _("not yet right")}[self.passed]
        return f"{self.title()}: {label} — {self.message}"

    def _repr_html_(self) -> str:
        colour = {True: "#1a7f37", None: "#6e7781", False: "#cf222e"}[self.passed]
        mark = {True: "✔", None: "…", False: "✘"}[self.passed]
        return (f'<div style="border-left: 4px solid {colour}; padding: 4px 10px; color: {colour}">'
                f"{mark} {html.escape(repr(self))}</div>")


class _NotDone(Exception):
    """The learner's answer is still the stub."""


class _Raised(Exception):
    """The learner's code raised: carried to the verdict with where it happened in their code."""


def _where(error: BaseException) -> str:
    """' (line N of your code: `source`)' for the innermost frame outside the kit and the libraries."""
    frames = [f for f in traceback.extract_tb(error.__traceback__)
              if "site-packages" not in f.filename and "/lora_lab/" not in f.filename.replace("\\", "/")
              and not f.filename.startswith("<frozen")]
    if not frames:
        return ""
    f = frames[-1]
    if f.line:
        return _(" (line {line} of your code: `{source}`)").format(line=f.lineno, source=f.line)
    return _(" (line {line} of your code)").format(line=f.lineno)


def _call(fn, *args, **kwargs):
    """Call the learner's code; a stub's NotImplementedError becomes 'not done yet', any other error a wrong verdict."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotDone from None
    except Exception as e:  # noqa: BLE001 - whatever the learner's code raises is reported, not re-raised
        raise _Raised(_("your code raised {error}: {detail}{where}").format(
            error=type(e).__name__, detail=e, where=_where(e))) from None


def _check(exercise: str):
    """Turn a function that asserts (and returns a success message) into a check that returns a Verdict.

    `exercise` is the English label, "Exercise NN.M · answer_name"; the check gets `exercise_id`
    ("NN.M") and `answer_name` attributes parsed from it, for graders. ValueError for a malformed label.
    """
    m = _LABEL.fullmatch(exercise)
    if m is None:
        raise ValueError(f"exercise={exercise!r} is not accepted; write 'Exercise NN.M · answer_name'")

    def wrap(body):
        @functools.wraps(body)
        def check(answer) -> Verdict:
            try:
                with warnings.catch_warnings():  # library deprecation notes are not the learner's business
                    warnings.simplefilter("ignore", FutureWarning)
                    message = body(answer)
            except _NotDone:
                return Verdict(exercise, None, _("it still raises NotImplementedError: write your answer in place "
                                                 "of the `raise` line and run the cell again."))
            except (AssertionError, _Raised) as e:
                return Verdict(exercise, False, str(e))
            return Verdict(exercise, True, message)

        check.exercise_id, check.answer_name = m["number"], m["name"]
        return check
    return wrap


def _close(a: float, b: float, rel: float = 1e-3) -> bool:
    return math.isclose(float(a), float(b), rel_tol=rel)


def _is_tensor(x, name: str) -> None:
    """Assert that `x` is a tensor; `name` says which value, in the learner's words (already translated)."""
    assert isinstance(x, torch.Tensor), _("{name} should be a torch.Tensor, got {kind}.").format(
        name=name, kind=type(x).__name__)


def _first_difference(got: str, want: str) -> int:
    """Index of the first character where two strings differ (the shorter one's length if one extends the other)."""
    return next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
