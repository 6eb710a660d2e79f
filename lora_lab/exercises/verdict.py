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
import numbers
import re
import traceback
import warnings
from dataclasses import dataclass

import torch

from ..i18n import _

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


# what torch says when two tensors' shapes do not fit a matmul, a broadcast or a copy
_SHAPE_ERROR = re.compile(r"cannot be multiplied|must match the size of tensor|size mismatch|broadcast shape|"
                          r"inconsistent tensor size|Expected size|shapes? .*(?:mismatch|do not match)", re.IGNORECASE)


def _is_shape_error(error: BaseException) -> bool:
    """True for torch's errors about shapes that do not fit (matmul, broadcast, copy_)."""
    return isinstance(error, (RuntimeError, ValueError)) and bool(_SHAPE_ERROR.search(str(error)))


def _call(fn, *args, explain=None, **kwargs):
    """Call the learner's code; a stub's NotImplementedError becomes 'not done yet', any other error a wrong verdict.

    `explain(error)` may return a sentence (already translated) that says what the error means in the
    exercise's terms, e.g. which shape each of A, B and W has; it is added after torch's own message.
    """
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise _NotDone from None
    except Exception as e:  # noqa: BLE001 - whatever the learner's code raises is reported, not re-raised
        hint = explain(e) if explain is not None else None
        if hint:
            raise _Raised(_("your code raised {error}: {detail}{where}. {hint}").format(
                error=type(e).__name__, detail=e, where=_where(e), hint=hint)) from None
        raise _Raised(_("your code raised {error}: {detail}{where}").format(
            error=type(e).__name__, detail=e, where=_where(e))) from None


def _lora_shapes_hint(r: int, fin: int, fout: int, x_shape=None, weight: bool = False):
    """An `explain` for _call: a shape error, told in LoRA's terms (A is (r, in), B is (out, r), …) with these sizes."""
    def explain(error: BaseException) -> str | None:
        if not _is_shape_error(error):
            return None
        text = _("A is (r, in) = ({r}, {fin}), B is (out, r) = ({fout}, {r})").format(r=r, fin=fin, fout=fout)
        if weight:
            text += _(", W is (out, in) = ({fout}, {fin})").format(fout=fout, fin=fin)
        if x_shape is not None:
            text += _(" and x is (…, in) = {shape}").format(shape=tuple(x_shape))
        return _("The shapes do not fit: {shapes}. PyTorch stores a weight as (out, in), so a weight multiplies x "
                 "transposed, x @ W.T, and A comes first: x @ A.T is (…, r), then @ B.T is (…, out); "
                 "ΔW = B @ A is (out, in).").format(shapes=text)
    return explain


def _wrong_kind(answer, takes: str, name: str) -> str | None:
    """Why `answer` is not the kind of thing the check takes (your function, or your class), or None if it is.

    Checked before anything is called, so that passing `my_function(...)`'s result, or an object already
    built from your class, is named as such instead of surfacing as an error inside your code.
    """
    if takes == "class":
        if isinstance(answer, torch.nn.Module):
            return _("you passed an object already built from your class ({kind}(…)); pass the class itself, "
                     "{name}, with no parentheses: the check builds its own layers, with sizes of its own."
                     ).format(kind=type(answer).__name__, name=name)
        if not callable(answer):
            return _("pass your class itself, {name}, with no parentheses; you passed {kind}.").format(
                name=name, kind=type(answer).__name__)
        return None
    if isinstance(answer, type):
        return _("pass your function, {name}, not the class {kind}: the check calls it on inputs of its own."
                 ).format(name=name, kind=answer.__name__)
    if not callable(answer):
        shown = repr(answer)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return _("pass your function itself, {name}, with no parentheses: you passed a value, {value} ({kind}), "
                 "which is what a call returns. The check calls {name} on inputs of its own.").format(
            name=name, value=shown, kind=type(answer).__name__)
    return None


def _check(exercise: str, takes: str = "function"):
    """Turn a function that asserts (and returns a success message) into a check that returns a Verdict.

    `exercise` is the English label, "Exercise NN.M · answer_name"; the check gets `exercise_id`
    ("NN.M") and `answer_name` attributes parsed from it, for graders. `takes` is what the learner passes:
    "function" (their function) or "class" (their class, or anything that builds the object when called);
    another kind of answer is told so before it is called. ValueError for a malformed label or `takes`.
    """
    m = _LABEL.fullmatch(exercise)
    if m is None:
        raise ValueError(f"exercise={exercise!r} is not accepted; write 'Exercise NN.M · answer_name'")
    if takes not in ("function", "class"):
        raise ValueError(f"takes={takes!r} is not accepted; choose 'function' or 'class'")

    def wrap(body):
        @functools.wraps(body)
        def check(answer) -> Verdict:
            wrong_kind = _wrong_kind(answer, takes, m["name"])
            if wrong_kind is not None:
                return Verdict(exercise, False, wrong_kind)
            try:
                with warnings.catch_warnings():  # library deprecation notes are not the learner's business
                    warnings.simplefilter("ignore", FutureWarning)
                    message = body(answer)
            except _NotDone:
                return Verdict(exercise, None, _("it still raises NotImplementedError: write your answer in place "
                                                 "of the `raise` line and run the cell again."))
            except (AssertionError, _Raised) as e:
                return Verdict(exercise, False, str(e))
            except Exception as e:  # noqa: BLE001 - an answer of a kind no test foresaw: a verdict, never a crash
                return Verdict(exercise, False, _(
                    "the check could not compare your answer with the reference ({error}: {detail}). Look at what "
                    "your code returns: its type, its shape and its dtype, against what the exercise asks.").format(
                    error=type(e).__name__, detail=e))
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


def _float_result(got: torch.Tensor, name: str, *, float32_only: bool = False) -> torch.Tensor:
    """Assert that the tensor `got` holds values as precise as the float32 inputs it came from; return it as float32.

    `name` says which value, in the learner's words (already translated). A 16-bit float rounds every value
    (fp16 keeps about 3 significant digits, bf16 about 2), so it cannot match a float32 reference and is told
    so by its dtype; an integer dtype cannot hold the fractions. float64 holds the same values and is accepted,
    unless `float32_only` (the exercise asks float32, e.g. where the memory of the result is the point).
    Comparing the float32 copy this returns with a float32 reference never fails on mixed dtypes.
    """
    dtype = got.dtype
    if dtype.is_floating_point:
        if torch.finfo(dtype).bits < 32:
            digits = round(-math.log10(torch.finfo(dtype).resolution))
            raise AssertionError(_("{name} is {dtype}: a 16-bit float keeps only about {digits} significant digits, so "
                                   "every value is rounded and cannot match the float32 reference; compute and return "
                                   "float32.").format(name=name, dtype=dtype, digits=digits))
        if float32_only and dtype != torch.float32:
            raise AssertionError(_("{name} is {dtype}; the exercise asks float32: float64 holds no more than the "
                                   "float32 inputs had, in twice the memory.").format(name=name, dtype=dtype))
        return got.to(torch.float32)
    raise AssertionError(_("{name} is {dtype}, which cannot hold the fractions these values have: return a float32 "
                           "tensor.").format(name=name, dtype=dtype))


def _whole_bytes(got, what: str) -> None:
    """Assert that a right number of bytes is an int: memory comes in whole bytes (exercises 05.2, 06.3, 08.1, 08.2).

    Called once the value is known to be right, so a float with the right value is told just that.
    """
    if not isinstance(got, numbers.Integral) or isinstance(got, bool):
        raise AssertionError(_("{what}: the right number of bytes, but a {kind}, not an int. Bytes are whole numbers: "
                               "return an int (// divides without leaving a float).").format(
            what=what, kind=type(got).__name__))
