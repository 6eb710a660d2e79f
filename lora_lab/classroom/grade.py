"""Grade a folder of submitted notebooks with the kit's own exercise checks: `lora-lab classroom grade`.

    lora-lab classroom grade SUBMISSIONS/ --out grades.csv [--notebook 02] [--timeout 600] [--memory-gib 6]

Each `*.ipynb` under SUBMISSIONS is one submission: `SUBMISSIONS/alice.ipynb` is alice's, and so is every
notebook in `SUBMISSIONS/alice/`. Each runs alone (`worker.py`): a fresh copy of the kit and its data in a
scratch folder outside any working tree, a kernel with no Hugging Face hub (`HF_HUB_OFFLINE`), no network
where Linux lets an unprivileged user cut it (`unshare -rn`), a memory limit (address space, so it includes
what torch maps), a time limit per cell and one per notebook. Every cell runs even after one fails, then
the kit's checks grade each exercise from the learner's function or class, never from the notebook's
printed verdict: a redefined or skipped check and an edited stored output change nothing, and are noted.

One CSV row per submission and exercise; `status` is correct, wrong, not done or not graded (the notebook
could not be run far enough: see `run`). A summary per exercise is printed and drawn.
"""

from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .report import COLUMNS, STATUSES, Row, plot_summary, summary_table, write_csv  # noqa: F401 (re-exported)


def _verdict_pattern() -> tuple[re.Pattern, dict[str, str]]:
    """A displayed verdict ("Exercise 00.2 · weights_gib: correct — …", or in Vietnamese) and {its label: status}.

    Built from the checks' own message catalogue, so a reworded translation is still recognised.
    """
    from ..exercises.vi import MESSAGES

    labels = {"correct": "correct", "not yet right": "wrong", "not done yet": "not done"}
    labels |= {MESSAGES[en]: status for en, status in list(labels.items())}
    title = "Exercise {number} · {name}"
    words = "|".join(re.escape(t.split(" {number}")[0]) for t in (title, MESSAGES[title]))
    alternatives = "|".join(re.escape(label) for label in sorted(labels, key=len, reverse=True))
    return re.compile(rf"(?:{words}) (\d\d\.\d+) · \w+: ({alternatives})"), labels


_SHOWN, _SHOWN_STATUS = _verdict_pattern()
_HEADING = re.compile(r"^#\s*(\d\d)\s*·", re.M)





@dataclass
class Limits:
    """What one submission may use. timeout_s: the whole notebook; cell_timeout_s: one cell (an endless loop)."""

    timeout_s: float = 600.0
    cell_timeout_s: float = 120.0
    memory_gib: float = 6.0
    language: str = "en"


def exercises_by_notebook() -> dict[str, list]:
    """{"00": [check, ...], ...}: the kit's checks, each with .exercise_id ("00.1") and .answer_name."""
    from ..exercises import EXERCISES

    out: dict[str, list] = collections.defaultdict(list)
    for check in EXERCISES:
        out[check.exercise_id.split(".")[0]].append(check)
    return dict(out)


def find_submissions(folder: Path) -> list[tuple[str, Path]]:
    """(student, path) for every notebook under folder: the file's stem, or the name of its first sub-folder."""
    found = []
    for path in sorted(folder.rglob("*.ipynb")):
        rel = path.relative_to(folder)
        if ".ipynb_checkpoints" in rel.parts:
            continue
        found.append((rel.parts[0] if len(rel.parts) > 1 else path.stem, path))
    return found


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


def _network_cut() -> list[str]:
    """The command prefix that runs a process without network, where this system allows it ([] otherwise)."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0:
        return [unshare, "-rn"]
    return []


def _kit_copy(dest: Path) -> dict[str, str]:
    """Copy the package and its data under dest; return {file: sha256} of the package's Python files."""
    from .. import paths

    package = Path(paths.__file__).resolve().parent
    shutil.copytree(package, dest / "lora_lab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    if not paths.DATA_DIR.is_relative_to(package):
        shutil.copytree(paths.DATA_DIR, dest / "data")
    return {p.relative_to(dest / "lora_lab").as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((dest / "lora_lab").rglob("*.py"))}


def _run_worker(nb_path: Path, checks: list, limits: Limits, scratch: Path) -> tuple[list[dict], bool, float]:
    """Run the sandboxed worker; (its events, whether the notebook time limit stopped it, seconds)."""
    kit, work, home = scratch / "kit", scratch / "work", scratch / "home"
    for d in (work, home):
        d.mkdir()
    hashes = _kit_copy(kit)
    shutil.copy(nb_path, work / "submission.ipynb")
    results = scratch / "results.jsonl"
    spec = {"notebook": str(work / "submission.ipynb"), "results": str(results), "hashes": hashes,
            "exercises": [{"id": c.exercise_id, "answer": c.answer_name} for c in checks],
            "cell_timeout_s": limits.cell_timeout_s, "memory_gib": limits.memory_gib, "language": limits.language}
    (scratch / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "ATEN_CPU_CAPABILITY")}
    env.update(PYTHONPATH=str(kit), HOME=str(home), HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", MPLBACKEND="Agg", OMP_NUM_THREADS="1",
               JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "jupyter"),
               IPYTHONDIR=str(home / "ipython"), PYTHONDONTWRITEBYTECODE="1")
    cmd = [*_network_cut(), sys.executable, "-m", "lora_lab.classroom.worker", str(scratch / "spec.json")]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # its own process group: the kernel goes with it
    try:
        proc.wait(timeout=limits.timeout_s)
        timed_out = False
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    seconds = round(time.perf_counter() - start, 1)
    events = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    return events, timed_out, seconds


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


def grade_submission(student: str, path: Path, root: Path, expected: str | None, limits: Limits) -> list[Row]:
    """Rows for one submitted notebook (one per exercise of the notebook it is, or should be)."""
    import nbformat

    rel, by_nb = path.relative_to(root).as_posix(), exercises_by_notebook()
    try:
        nb = json.loads(path.read_text(encoding="utf-8"))
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
    with tempfile.TemporaryDirectory(prefix="lora-lab-grade-") as scratch:
        events, timed_out, seconds = _run_worker(path, checks, limits, Path(scratch))
    grades = {e["exercise"]: e for e in events if e["kind"] == "grade"}
    errors = [e for e in events if e["kind"] == "cell error"]
    dead = next((e for e in events if e["kind"] in ("dead", "failed")), None)
    grader_errors = [e for e in events if e["kind"] == "grader error"]
    ran_shown = collections.defaultdict(set)
    for e in events:
        if e["kind"] == "cell":
            for ex, label in _SHOWN.findall(e["shown"]):
                ran_shown[ex].add(_SHOWN_STATUS[label])
    if timed_out:
        run = f"stopped at the notebook time limit ({limits.timeout_s:g} s)"
    elif dead is not None and dead["kind"] == "dead":
        where = f" in cell {dead['cell']}" if dead.get("cell") is not None else ""
        run = f"kernel died{where} (a crash, or over the {limits.memory_gib:g} GiB memory limit)"
    elif dead is not None:
        run = f"could not run: {dead['detail']}"
    elif errors:
        first = errors[0]
        what = (f"interrupted at the {limits.cell_timeout_s:g} s cell time limit" if first["ename"] == "KeyboardInterrupt"
                else f"{first['ename']}: {first['evalue']}")  # the grader's interrupt is the only KeyboardInterrupt
        run = f"ran with errors in {len(errors)} cell(s); first: cell {first['cell']}, {what}"
    else:
        run = "ok"
    stored = _shown(nb)
    rows = []
    for i, check in enumerate(checks):
        ex, answer = check.exercise_id, check.answer_name
        g = grades.get(ex)
        status, message, secs = "not graded", "", ""
        if g is not None:
            status, message, secs = g["status"], g["message"], g.get("seconds", "")
            if status == "missing":
                cell = _defining_cell(nb, answer)
                err = next((e for e in errors if e["cell"] == cell), None)
                status = "wrong" if err else "not done"
                message = (f"{answer} is not defined: its cell raised {err['ename']}: {err['evalue']}" if err
                           else f"the notebook defines no {answer}")
        elif timed_out or dead is not None:
            message = "the notebook stopped before this exercise could be graded"
        elif any(e["ename"] in ("KeyboardInterrupt", "CellTimeoutError") for e in grader_errors):
            status, secs = "wrong", limits.cell_timeout_s
            message = f"the check did not finish within {limits.cell_timeout_s:g} s: an endless loop?"
        notes = []
        claimed = status in ("wrong", "not done")  # graded, and not correct
        if claimed and "correct" in stored.get(ex, ()):
            notes.append("the submitted file shows this exercise correct, the kit's check does not: "
                         "an edited output or a redefined check")
        if claimed and "correct" in ran_shown.get(ex, ()):
            notes.append("the notebook's own check call said correct when run: the check was redefined or bypassed")
        if not _calls(nb, check.__name__):
            notes.append(f"the notebook no longer calls {check.__name__}")
        rows.append(Row(student, rel, found, run, ex, status, message, "; ".join(notes), secs, seconds))
    return rows


def grade(submissions: Path, out: Path, notebook: str | None = None, limits: Limits | None = None,
          plot: Path | None = None, echo=print) -> list[Row]:
    """Grade every notebook under submissions; write the CSV to out (and the plot next to it). Returns the rows."""
    limits = limits or Limits()
    plot = plot or out.with_suffix(".png")
    for flag, path in (("--out", out), ("--plot", plot)):  # all checked before a notebook runs
        if path.exists():
            raise FileExistsError(f"{flag}: {path} exists: choose another name (grades are never overwritten)")
        if not path.parent.is_dir():
            raise FileNotFoundError(f"{flag}: the folder {path.parent} does not exist: create it first")
    subs = find_submissions(submissions)
    if not subs:
        raise FileNotFoundError(f"no .ipynb file under {submissions}: nothing to grade")
    cut = "cut" if _network_cut() else "not cut (this system has no unprivileged unshare): hub access is off"
    echo(f"grading {len(subs)} notebook(s); network {cut}; limits: {limits.timeout_s:g} s a notebook, "
         f"{limits.cell_timeout_s:g} s a cell, {limits.memory_gib:g} GiB")
    rows: list[Row] = []
    for student, path in subs:
        got = grade_submission(student, path, submissions, notebook, limits)
        marks = " ".join(f"{r.exercise}:{r.status}" for r in got if r.exercise)
        notes = sum(1 for r in got if r.note)
        flag = f"  NOTES on {notes} exercise(s): see the CSV" if notes else ""
        echo(f"  {student:<12} {path.relative_to(submissions).as_posix():<44} {got[0].run_seconds or '-':>6} s  "
             f"{marks}  [{got[0].run[:60]}]{flag}")
        rows.extend(got)
    write_csv(rows, out)
    echo("\n" + summary_table(rows))
    plot_summary(rows, plot)
    echo(f"\nwrote {out} and {plot}")
    return rows
