"""Grade a folder of submitted notebooks with the kit's own exercise checks: `lora-lab classroom grade`.

    lora-lab classroom grade SUBMISSIONS/ [--out grades.csv] [--notebook 02] [-j 2] [--timeout 600] [--memory-gib 6]

Each regular `*.ipynb` file under SUBMISSIONS is one submission: `SUBMISSIONS/alice.ipynb` is alice's, and so
is every notebook in `SUBMISSIONS/alice/`; a symbolic link, a FIFO or a device is listed as skipped, never
opened. Each submission runs in its own sandbox (`sandbox.py`: bubblewrap, the kit and Python read-only, a
private folder and /tmp, no network, its own PID namespace, memory and process limits) with a time limit per
cell and per notebook; `-j N` runs N at a time. Every cell runs even after one fails, then the kit's checks
grade each exercise from the learner's function or class (`inkernel.py`), never from the notebook's printed
verdict: a redefined or skipped check and an edited stored output change nothing, and are noted.

One CSV row per submission and exercise; `status` is correct, wrong, not done or not graded (see `run` and
`message` for why). The CSV, the per-student totals (`…-totals.csv`) and the plot are rewritten as each
submission finishes; a summary per exercise and the totals are printed at the end.
"""

from __future__ import annotations

import collections
import json
import os
import re
import stat
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from . import report, sandbox
from .report import COLUMNS, Row, plain, summary_table  # noqa: F401 (COLUMNS: for readers of the CSV)
from .runner import GradingRun


def _verdict_pattern() -> tuple[re.Pattern, dict[str, str]]:
    """A displayed verdict ("Exercise 00.2 · weights_gib: correct — …", or in Vietnamese) and {its label: status}.

    Built from the checks' own message catalogue, so a reworded translation is still recognised.
    """
    from ..i18n import LANGUAGES, translations

    labels = {"correct": "correct", "not yet right": "wrong", "not done yet": "not done"}
    title = "Exercise {number} · {name}"
    titles = {translations(lang).gettext(title) for lang in LANGUAGES}
    labels |= {translations(lang).gettext(en): status for lang in LANGUAGES for en, status in list(labels.items())}
    words = "|".join(re.escape(t.split(" {number}")[0]) for t in sorted(titles))
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    return re.compile(rf"(?:{words}) (\d\d\.\d+) · \w+: ({alternatives})"), labels


_SHOWN, _SHOWN_STATUS = _verdict_pattern()
_HEADING = re.compile(r"^#\s*(\d\d)\s*·", re.M)
MAX_BYTES = 64 * 2**20  # a notebook larger than this is not read


@dataclass
class Limits:
    """What one submission may use. timeout_s: the whole notebook; cell_timeout_s: one cell (an endless loop)."""

    timeout_s: float = 600.0
    cell_timeout_s: float = 120.0
    memory_gib: float = 6.0
    language: str = "en"
    processes: int = 256


def exercises_by_notebook() -> dict[str, list]:
    """{"00": [check, ...], ...}: the kit's checks, each with .exercise_id ("00.1") and .answer_name."""
    from ..exercises import EXERCISES

    out: dict[str, list] = collections.defaultdict(list)
    for check in EXERCISES:
        out[check.exercise_id.split(".")[0]].append(check)
    return dict(out)


def find_submissions(folder: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, Path, str]]]:
    """([(student, path)] of every regular .ipynb file under folder, [(student, path, why)] of what was skipped:
    links, FIFOs, devices, folders named *.ipynb, linked folders). The student is the file's stem, or the name of
    its first sub-folder. Links are never followed and nothing skipped is opened."""
    found, skipped = [], []
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d != ".ipynb_checkpoints")
        for name in sorted(dirs + files):
            path = Path(top) / name
            rel = path.relative_to(folder)
            student = rel.parts[0] if len(rel.parts) > 1 else path.stem
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) and (name.endswith(".ipynb") or name in dirs):
                skipped.append((student, path, "a symbolic link (only regular files are graded)"))
            elif not name.endswith(".ipynb"):
                continue
            elif stat.S_ISREG(mode):
                found.append((student, path))
            else:
                kind = ("a folder" if stat.S_ISDIR(mode) else "a FIFO" if stat.S_ISFIFO(mode) else
                        "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                        else "not a regular file")
                skipped.append((student, path, f"{kind} (only regular files are graded)"))
    return sorted(found, key=lambda f: f[1]), sorted(skipped, key=lambda f: f[1])


def read_regular(path: Path, limit: int = MAX_BYTES) -> str:
    """The text of a regular file, opened without following a link or blocking on a FIFO (OSError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > limit:
            raise OSError(f"{info.st_size / 2**20:.0f} MiB, over the {limit // 2**20} MiB a notebook may have")
        return f.read(limit + 1).decode("utf-8")


def identify(nb: dict) -> str | None:
    """The notebook's number: from the release's metadata, else from its title "# 02 · …"."""
    number = (nb.get("metadata", {}).get("lora_lab") or {}).get("notebook")
    if isinstance(number, str) and re.fullmatch(r"\d\d", number):
        return number
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            m = _HEADING.search(src)
            if m:
                return m.group(1)
    return None


def _shown(nb: dict) -> dict[str, set[str]]:
    """{exercise id: statuses the stored outputs display}."""
    out: dict[str, set[str]] = collections.defaultdict(set)
    for cell in nb.get("cells", []):
        for o in cell.get("outputs", []):
            text = o.get("text", "") or o.get("data", {}).get("text/plain", "")
            text = text if isinstance(text, str) else "".join(text)
            for ex, label in _SHOWN.findall(text):
                out[ex].add(_SHOWN_STATUS[label])
    return out


def _defining_cell(nb: dict, answer: str) -> int | None:
    pattern = re.compile(rf"^\s*(?:def|class)\s+{re.escape(answer)}\b|^\s*{re.escape(answer)}\s*=", re.M)
    for i, cell in enumerate(nb.get("cells", [])):
        src = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
        if cell.get("cell_type") == "code" and pattern.search(src):
            return i
    return None


def _calls(nb: dict, name: str) -> bool:
    return any(cell.get("cell_type") == "code" and re.search(rf"\b{name}\s*\(", "".join(cell["source"]))
               for cell in nb.get("cells", []))


def grade_submission(student: str, path: Path, root: Path, expected: str | None, limits: Limits,
                     run: GradingRun) -> list[Row]:
    """Rows for one submitted notebook (one per exercise of the notebook it is, or should be)."""
    import nbformat

    rel, by_nb = path.relative_to(root).as_posix(), exercises_by_notebook()
    try:
        text = read_regular(path)
        nb = json.loads(text)
        nbformat.validate(nbformat.from_dict(nb))
    except Exception as e:  # noqa: BLE001 - a file that is not a notebook is a status, not a grader crash
        number = expected or "?"
        why = f"unreadable: not a valid notebook ({type(e).__name__}: {str(e)[:120]})"
        return [Row(student, rel, number, why, c.exercise_id, "not graded", "the file could not be read")
                for c in by_nb.get(number, [])] or [Row(student, rel, number, why, "", "not graded")]
    found = identify(nb)
    if expected and found != expected:
        why = f"wrong notebook: this is notebook {found or 'unknown'}, expected {expected}"
        return [Row(student, rel, expected, why, c.exercise_id, "not graded", "a different notebook was submitted")
                for c in by_nb[expected]]
    if found not in by_nb:
        why = "not a lora-lab notebook with exercises" if found is None else f"notebook {found} has no exercises"
        return [Row(student, rel, found or "?", why, "", "not graded")]
    checks = by_nb[found]
    events, timed_out, seconds = run.run(text, [{"id": c.exercise_id, "answer": c.answer_name} for c in checks],
                                         limits)
    grades, failed = {}, {}
    for e in events:
        if e["kind"] == "grade":
            grades.setdefault(e["exercise"], e)
        elif e["kind"] == "grade failed":
            failed.setdefault(e["exercise"], e)
    replaced = sorted({n for e in events if e["kind"] == "kit replaced" for n in e["names"]})
    errors = [e for e in events if e["kind"] == "cell error"]
    dead = next((e for e in events if e["kind"] in ("dead", "failed")), None)
    ran_shown = collections.defaultdict(set)
    for e in events:
        if e["kind"] == "cell":
            for ex, label in _SHOWN.findall(e["shown"]):
                ran_shown[ex].add(_SHOWN_STATUS[label])
    if timed_out:
        run_status = f"stopped at the notebook time limit ({limits.timeout_s:g} s)"
    elif dead is not None and dead["kind"] == "dead":
        where = " while grading" if dead.get("grading") else (f" in cell {dead['cell']}" if dead.get("cell")
                                                               is not None else "")
        run_status = f"kernel died{where} (a crash, or over the {limits.memory_gib:g} GiB memory limit)"
    elif dead is not None:
        run_status = f"could not run: {dead['detail']}"
    elif errors:
        first = errors[0]
        what = (f"interrupted at the {limits.cell_timeout_s:g} s cell time limit" if first["ename"] == "KeyboardInterrupt"
                else f"{first['ename']}: {first['evalue']}")  # the grader's interrupt is the only KeyboardInterrupt
        run_status = f"ran with errors in {len(errors)} cell(s); first: cell {first['cell']}, {what}"
    else:
        run_status = "ok"
    stored = _shown(nb)
    rows = []
    for check in checks:
        ex, answer = check.exercise_id, check.answer_name
        g, f = grades.get(ex), failed.get(ex)
        status, message, secs = "not graded", "", ""
        notes = [f"the notebook replaced {', '.join(replaced)} in memory; the check used the kit's own"] if replaced else []
        if g is not None:
            status, message, secs = g["status"], g["message"], g.get("seconds", "")
            if status == "missing":
                cell = _defining_cell(nb, answer)
                err = next((e for e in errors if e["cell"] == cell), None)
                status = "wrong" if err else "not done"
                message = (f"{answer} is not defined: its cell raised {err['ename']}: {err['evalue']}" if err
                           else f"the notebook defines no {answer}")
        elif f is not None and f["ename"] == "KeyboardInterrupt":
            message = f"the check did not finish within {limits.cell_timeout_s:g} s (an endless loop in the answer?)"
        elif f is not None:
            message = f"the grading cell raised {f['ename']}: {f['evalue']}" if f["ename"] else f["evalue"]
        elif timed_out or dead is not None:
            message = "the notebook stopped before this exercise could be graded"
        claimed = status in ("wrong", "not done")  # graded, and not correct
        if claimed and "correct" in stored.get(ex, ()):
            notes.append("the submitted file shows this exercise correct, the kit's check does not: "
                         "an edited output or a redefined check")
        if claimed and "correct" in ran_shown.get(ex, ()):
            notes.append("the notebook's own check call said correct when run: the check was redefined or bypassed")
        if not _calls(nb, check.__name__):
            notes.append(f"the notebook no longer calls {check.__name__}")
        rows.append(Row(student, rel, found, run_status, ex, status, message, "; ".join(notes), secs, seconds))
    return rows


def default_out() -> Path:
    """grades-YYYYmmdd-HHMMSS.csv in lora-lab-grades/ beside the clone (outside its working tree)."""
    from .release import default_place

    return default_place("lora-lab-grades") / time.strftime("grades-%Y%m%d-%H%M%S.csv")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def grade(submissions: Path, out: Path | None = None, notebook: str | None = None, limits: Limits | None = None,
          plot: Path | None = None, echo=print, jobs: int = 1, unsafe: bool = False) -> list[Row]:
    """Grade every notebook under submissions, each in its own sandbox, `jobs` at a time; write the CSV to out
    (default: `default_out()`), the totals beside it and the plot (default: out with .png). Returns the rows.

    Raises FileExistsError / FileNotFoundError for output paths (never overwritten) or an empty folder, and
    sandbox.SandboxUnavailable where no sandbox can be made and unsafe is False, before anything runs."""
    limits = limits or Limits()
    if out is None:
        out = default_out()
        out.parent.mkdir(parents=True, exist_ok=True)
    plot = plot or out.with_suffix(".png")
    totals = out.with_name(out.stem + "-totals.csv")
    for flag, path in (("--out", out), ("--plot", plot), ("--out (its totals)", totals)):  # all before a notebook runs
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"{flag}: {path} exists: choose another name (grades are never overwritten)")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{flag}: the folder {path.parent} does not exist: create it first")
    subs, skipped = find_submissions(submissions)
    if not subs and not skipped:
        raise FileNotFoundError(f"no .ipynb file under {submissions}: nothing to grade")
    isolation = sandbox.detect(unsafe=unsafe)
    echo(f"grading {len(subs)} notebook(s), {jobs} at a time; limits: {limits.timeout_s:g} s a notebook, "
         f"{limits.cell_timeout_s:g} s a cell")
    echo(isolation.describe(limits.memory_gib, limits.processes))
    from .release import unignored_in_git

    for path in {out, plot, totals}:
        tree = unignored_in_git(path)
        if tree is not None:
            echo(f"warning: {path} is inside the git working tree {tree}, which does not ignore it: `git add` "
                 f"would commit students' names and grades (write them outside it, or list them in .git/info/exclude)")
    rows: list[Row] = []
    for student, path, why in skipped:
        rows.append(Row(student, path.relative_to(submissions).as_posix(), notebook or "?", f"skipped: {why}", "",
                        "not graded"))
    csv_out = report.CsvWriter(out)
    csv_out.add(rows)
    for r in rows:
        echo(f"  {plain(r.student):<12} {plain(r.file):<44} {r.run}")
    run = GradingRun(isolation)
    start, done = time.perf_counter(), 0
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(grade_submission, student, path, submissions, notebook, limits, run): path
                       for student, path in subs}
            try:
                for future in as_completed(futures):
                    got = future.result()
                    run.check_kit()
                    done += 1
                    rows.extend(got)
                    csv_out.add(got)
                    report.write_totals(rows, totals)
                    report.plot_summary(rows, plot)
                    marks = " ".join(f"{r.exercise}:{r.status}" for r in got if r.exercise)
                    notes = sum(1 for r in got if r.note)
                    flag = f"  NOTES on {notes} exercise(s): see the CSV" if notes else ""
                    elapsed = time.perf_counter() - start
                    left = f"; about {_minutes(elapsed / done * (len(subs) - done))} left" if done < len(subs) else ""
                    echo(f"  [{done}/{len(subs)}] {plain(got[0].student):<12} {plain(got[0].file):<44} "
                         f"{got[0].run_seconds or '-':>6} s  {marks}  [{plain(got[0].run)[:60]}]{flag}{left}")
            except BaseException:
                for f in futures:
                    f.cancel()
                run.stop()
                raise
    finally:
        csv_out.close()
        run.close()
    if not subs:
        report.write_totals(rows, totals)
        report.plot_summary(rows, plot)
    echo("\n" + summary_table(rows))
    echo("\nper student (score = correct / exercises; look at the not graded ones: the run and message columns "
         "say why)\n" + report.totals_table(rows))
    echo(f"\nwrote {out}, {totals.name} and {plot.name}")
    return rows
