"""The grades as an instructor reads them: the CSV, a summary per exercise, and the same summary drawn."""

from __future__ import annotations

import collections
import csv
import re
from dataclasses import asdict, dataclass
from pathlib import Path

COLUMNS = ("student", "file", "notebook", "run", "exercise", "status", "message", "note", "seconds", "run_seconds")
STATUSES = ("correct", "wrong", "not done", "not graded")


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


def write_csv(rows: list[Row], out: Path) -> None:
    with open(out, "x", newline="", encoding="utf-8") as f:  # "x": never overwrite an earlier grades file
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)


def _kind(message: str) -> str:
    """A wrong-answer message with the learner's own values masked, so the same mistake counts once."""
    message = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", message)
    return re.sub(r"\d[\d,._]*(e-?\d+)?", "#", message)


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
        common = f"{wrong[0][1]}× {_shorten(wrong[0][0])}" if wrong else ""
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
    fig.savefig(out, dpi=120)
    return fig


