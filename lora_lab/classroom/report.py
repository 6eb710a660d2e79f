"""The grades as an instructor reads them: the CSV, per-student totals, a summary per exercise, and a plot.

Everything a submission can influence (its file and folder names, its errors, the values the checks quote)
is made harmless before it is shown: control characters (newlines, ANSI escapes, bidirectional overrides)
are written as escapes such as `\\n` and `\\x1b`, so they can neither forge a line nor drive the terminal, and
a CSV cell that would start a spreadsheet formula (`=`, `+`, `-`, `@`) gets a leading `'` (OWASP's advice
on CSV injection). The files are rewritten after each graded submission, so an interrupted run keeps them.
"""

from __future__ import annotations

import collections
import csv
import os
import re
import unicodedata
from dataclasses import asdict, dataclass
from pathlib import Path

COLUMNS = ("student", "file", "notebook", "run", "exercise", "status", "message", "note", "seconds", "run_seconds")
STATUSES = ("correct", "wrong", "not done", "not graded")
# written with a prefix in the CSV (nb00, ex00.1): as "00" and "00.1", pandas and spreadsheets read them as 0 and 0.1
TEXT_PREFIX = {"notebook": "nb", "exercise": "ex"}


@dataclass
class Row:
    student: str
    file: str
    notebook: str
    run: str
    exercise: str
    status: str
    message: str = ""
    note: str = ""
    seconds: float | str = ""
    run_seconds: float | str = ""


TOTALS = ("student", "notebooks", "exercises", "correct", "wrong", "not_done", "not_graded", "score")


def plain(text) -> str:
    """text with every control or format character escaped (\\n, \\x1b, \\u202e): safe on a terminal, one line."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp"):
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(ch) or
                       (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"))
        else:
            out.append(ch)
    return "".join(out)


def csv_cell(value):
    """A CSV value that no spreadsheet reads as a formula and that holds no control character; numbers as they are."""
    if not isinstance(value, str):
        return value
    text = plain(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def csv_row(row: Row) -> dict:
    """One row as the CSV holds it: every cell through `csv_cell`, the notebook and exercise numbers as text."""
    out = {k: csv_cell(v) for k, v in asdict(row).items()}
    for column, prefix in TEXT_PREFIX.items():
        if re.fullmatch(r"[0-9.]+", out[column]):
            out[column] = prefix + out[column]
    return out


class CsvWriter:
    """The grades CSV, created new (never overwriting a file) and appended to as each submission is graded."""

    def __init__(self, out: Path):
        self._file = open(out, "x", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        self._writer.writeheader()
        self._file.flush()

    def add(self, rows: list[Row]) -> None:
        self._writer.writerows(csv_row(r) for r in rows)
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def write_csv(rows: list[Row], out: Path) -> None:
    """All rows at once to a new file (never overwritten)."""
    writer = CsvWriter(out)
    writer.add(rows)
    writer.close()


def totals(rows: list[Row]) -> list[dict]:
    """Per student: how many exercises in all, how many correct, wrong, not done and not graded, and
    score = correct / exercises (0 to 1; not graded counts as not correct until you look at it)."""
    by = collections.defaultdict(list)
    for r in rows:
        by[r.student].append(r)
    out = []
    for student in sorted(by):
        graded = [r for r in by[student] if r.exercise]
        n = collections.Counter(r.status for r in graded)
        out.append({"student": student, "notebooks": len({r.file for r in by[student]}), "exercises": len(graded),
                    "correct": n["correct"], "wrong": n["wrong"], "not_done": n["not done"],
                    "not_graded": n["not graded"], "score": round(n["correct"] / len(graded), 3) if graded else 0.0})
    return out


def write_totals(rows: list[Row], out: Path) -> None:
    """The per-student totals to out, replaced whole (written beside it, then renamed)."""
    part = out.with_name(out.name + ".part")
    with open(part, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=TOTALS)
        writer.writeheader()
        writer.writerows({k: csv_cell(v) for k, v in t.items()} for t in totals(rows))
    os.replace(part, out)


def totals_table(rows: list[Row]) -> str:
    lines = [f"{'student':<16}{'correct':>8}{'of':>4}{'wrong':>7}{'not done':>10}{'not graded':>12}{'score':>7}"]
    for t in totals(rows):
        lines.append(f"{plain(t['student'])[:15]:<16}{t['correct']:>8}{t['exercises']:>4}{t['wrong']:>7}"
                     f"{t['not_done']:>10}{t['not_graded']:>12}{t['score']:>7.2f}")
    return "\n".join(lines)


# a number standing alone: not the 16 of torch.bfloat16, the 4 of T4 or the 2 of Llama-2
_NUMBER = re.compile(r"(?<![\w.\-])-?\d[\d,_]*(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_QUOTED = re.compile(r"(?<!\w)'[^'\n]*'(?!\w)|\"[^\"\n]*\"")
_CODE = re.compile(r"(?<=: )`[^`]*`(?=\))")  # "(line 3 of your code: `…`)"


def _kind(message: str) -> str:
    """A wrong-answer message with the learner's own values masked, so the same mistake counts once."""
    message = _CODE.sub("`…`", _QUOTED.sub("'…'", message))
    return _NUMBER.sub("#", message)


def _shorten(text: str, width: int = 90) -> str:
    return text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + " …"


def summary_table(rows: list[Row]) -> str:
    """Per exercise: how many correct / wrong / not done / not graded, and the most common wrong-answer message."""
    by_ex = collections.defaultdict(list)
    for r in rows:
        if r.exercise:
            by_ex[r.exercise].append(r)
    lines = [f"{'exercise':<9}{'correct':>8}{'wrong':>7}{'not done':>10}{'not graded':>12}  most common wrong answer"]
    for ex in sorted(by_ex):
        counts = collections.Counter(r.status for r in by_ex[ex])
        wrong = collections.Counter(_kind(r.message) for r in by_ex[ex] if r.status == "wrong").most_common(1)
        common = f"{wrong[0][1]}× {_shorten(plain(wrong[0][0]))}" if wrong else ""
        lines.append(f"{ex:<9}{counts['correct']:>8}{counts['wrong']:>7}{counts['not done']:>10}"
                     f"{counts['not graded']:>12}  {common}")
    return "\n".join(lines)


def plot_summary(rows: list[Row], out: Path):
    """A stacked bar per exercise (correct, wrong, not done, not graded); saved to out. Returns the figure."""
    # no pyplot: no GUI backend needed, and a notebook's own backend is left as it was
    from matplotlib.figure import Figure

    from ..exercises import EXERCISES

    exercises = sorted({r.exercise for r in rows if r.exercise})
    names = {c.exercise_id: c.answer_name for c in EXERCISES}
    labels = [f"{ex} {names.get(ex, '')}".strip() for ex in exercises]
    colours = {"correct": "#1a7f37", "wrong": "#cf222e", "not done": "#8c959f", "not graded": "#d4a72c"}
    fig = Figure(figsize=(8, 0.45 * len(exercises) + 1.6))
    ax = fig.subplots()
    left = [0] * len(exercises)
    for status in STATUSES:
        n = [sum(1 for r in rows if r.exercise == ex and r.status == status) for ex in exercises]
        ax.barh(labels, n, left=left, color=colours[status], label=status)
        left = [a + b for a, b in zip(left, n)]
    ax.invert_yaxis()
    ax.set_xlabel("submissions")
    ax.xaxis.get_major_locator().set_params(integer=True)  # whole submissions
    ax.set_title(f"{len({(r.student, r.file) for r in rows})} submissions, per exercise")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)  # beside the bars
    fig.tight_layout()
    part = out.with_name(out.name + ".part")
    fig.savefig(part, dpi=120, format="png")
    os.replace(part, out)  # whole or not at all, when redrawn as each submission finishes
    return fig


