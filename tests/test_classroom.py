"""The classroom tools: a student release with no way to the answers, and a grader one student cannot use
against another.

The grading test builds a release, fills notebook 00 the ways students do (exercises left untouched, wrong then right, a
syntax error, an endless loop, a check redefined and its stored output edited, another notebook, a kernel that
dies, the kit patched in memory) and the ways a dishonest one might (tests/hostile_submissions.py: attacks on
the other students, the grader and the instructor's files; forged verdicts), next to an honest submission graded
last, two at a time. It compares the whole CSV with what it must say, and checks that no file outside the
sandboxes changed, no process of the run survived, nothing reached the network and the report is not forged.
"""

import csv
import hashlib
import json
import os
import re
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from hostile_submissions import FORGE, OSCAR, attack_cell
from sandbox_checks import Listener, need_sandbox, processes

from lora_lab.classroom import grade as grading
from lora_lab.classroom import sandbox
from lora_lab.classroom.release import release
from lora_lab.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def student_copy(tmp_path_factory):
    return release(tmp_path_factory.mktemp("release") / "course")


def _notebooks(folder: Path):
    return sorted(folder.rglob("*.ipynb"))


def _src(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def _solution_lines() -> set[str]:
    """The distinctive lines of every worked answer in the solutions notebooks."""
    lines = set()
    for path in (ROOT / "notebooks" / "solutions").glob("*.ipynb"):
        for cell in json.loads(path.read_text())["cells"]:
            src = _src(cell)
            if cell["cell_type"] != "code" or not re.search(r"^(def|class) ", src, re.M):
                continue
            for line in src.splitlines():
                s = line.strip()
                if len(s) >= 24 and not s.startswith(("#", "def ", "class ", "raise NotImplementedError", "check_",
                                                        "from ", "import ", "return None")):
                    lines.add(s)
    assert len(lines) > 40
    return lines


def test_release_has_no_solutions(student_copy):
    files = [p for p in student_copy.rglob("*") if p.is_file()]
    assert not [p for p in files if "solutions" in p.name or "solutions" in p.parent.parts]
    assert not (student_copy / "tests").exists() and not (student_copy / "notebooks" / "vi" / "translations").exists()
    names = {p.name for p in _notebooks(student_copy / "notebooks")}
    assert {p.name for p in (ROOT / "notebooks").glob("[0-9]*.ipynb")} <= names
    texts = {p: p.read_text(encoding="utf-8") for p in _notebooks(student_copy)}
    texts.update({p: p.read_text(encoding="utf-8") for p in (student_copy / "lora_lab" / "exercises").glob("*.py")})
    for path, text in texts.items():
        assert not re.search(r"notebooks/(vi/)?solutions/", text), f"{path.name} still points at the solutions"
    # the notebooks teach some pieces inline before an exercise asks for them again (02 builds LoRALinear,
    # then asks for MyLoRALinear with merge and unmerge): only what the solutions add counts as a leak
    taught = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "notebooks").glob("[0-9]*.ipynb"))
    answers = [line for line in _solution_lines() if line not in taught]
    assert len(answers) > 30
    leaked = [(path.name, line) for line in answers for path, text in texts.items() if line in text]
    assert not leaked, f"solution code in the release: {leaked[:3]}"


def test_release_clears_exercise_outputs_and_records_the_notebook(student_copy):
    for path in _notebooks(student_copy / "notebooks"):
        nb = json.loads(path.read_text())
        assert nb["metadata"]["lora_lab"]["notebook"] == path.name[:2]
        checked = [c for c in nb["cells"] if c["cell_type"] == "code" and re.search(r"^check_\w+\(", _src(c), re.M)]
        assert checked, path.name
        assert all(c["outputs"] == [] and c["execution_count"] is None for c in checked), path.name
        others = [c for c in nb["cells"] if c["cell_type"] == "code" and c not in checked and c["outputs"]]
        assert others, f"{path.name}: the teaching outputs should stay"
    assert "make lab" in (student_copy / "README.md").read_text()
    assert re.search(r"^lab:", (student_copy / "Makefile").read_text(), re.M)
    assert (student_copy / "data" / "tiny-llama").is_dir()


def test_release_refuses_to_overwrite_and_checks_the_repository(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep me")
    assert main(["classroom", "release", str(tmp_path / "out")]) == 2
    assert "not empty" in capsys.readouterr().err and (tmp_path / "out" / "mine.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("keep me too")
    assert main(["classroom", "release", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
    assert main(["classroom", "release", str(tmp_path / "new"), "--repository", "not a repo"]) == 2
    assert "repository='not a repo'" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_release_after_a_plain_install_is_made_from_the_clone_it_runs_in(tmp_path, monkeypatch, capsys):
    """`pip install .` puts the package in site-packages, away from the notebooks: run from the clone, the release
    takes everything (package, data, notebooks) from that clone; run elsewhere, it says where to run it."""
    from lora_lab.classroom import release as rel

    installed = tmp_path / "site-packages"
    (installed / "lora_lab").mkdir(parents=True)
    monkeypatch.setattr(rel, "ROOT", installed)  # the package's folder has no notebooks/ beside it
    monkeypatch.chdir(ROOT)
    assert rel.kit_clone() == ROOT and rel.default_place("x") == ROOT.parent / "x"
    out = release(tmp_path / "course")
    assert (out / "notebooks" / "04_nf4_from_scratch.ipynb").is_file() and (out / "data" / "tiny-llama").is_dir()
    assert (out / "lora_lab" / "nf4.py").read_bytes() == (ROOT / "lora_lab" / "nf4.py").read_bytes()
    monkeypatch.chdir(tmp_path)
    assert rel.kit_clone() is None
    assert main(["classroom", "release", str(tmp_path / "elsewhere")]) == 2
    err = capsys.readouterr().err
    assert "Run the command from the clone's folder" in err and "pip install -e ." in err, err
    assert not (tmp_path / "elsewhere").exists()


def test_release_can_point_colab_at_the_instructors_repository(tmp_path):
    out = release(tmp_path / "course", repository="myclass/lora-course")
    first = json.loads((out / "notebooks" / "00_start_here.ipynb").read_text())["cells"]
    text = "".join(_src(c) for c in first[:2])
    assert "github/myclass/lora-course/blob/main/notebooks/00_start_here.ipynb" in text
    assert "https://github.com/myclass/lora-course.git" in text and "lora-lab/lora-lab" not in text


def test_grade_refuses_bad_arguments_before_running_anything(tmp_path, capsys):
    (tmp_path / "subs").mkdir()
    assert main(["classroom", "grade", str(tmp_path / "nope"), "--out", str(tmp_path / "g.csv")]) == 2
    assert "SUBMISSIONS='" in capsys.readouterr().err
    assert main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "g.csv"), "--notebook", "9"]) == 2
    assert "--notebook='9'" in capsys.readouterr().err
    (tmp_path / "g.csv").write_text("earlier grades")
    assert main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "g.csv")]) == 2
    assert "never overwritten" in capsys.readouterr().err and (tmp_path / "g.csv").read_text() == "earlier grades"
    with pytest.raises(SystemExit):
        main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "h.csv"), "--timeout", "-1"])
    with pytest.raises(SystemExit):
        main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "h.csv"), "-j", "0"])
    assert "'0' is not a whole number of 1 or more" in capsys.readouterr().err
    assert main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "no" / "h.csv")]) == 2
    assert "--out: the folder" in capsys.readouterr().err
    assert main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "h.csv")]) == 2
    assert "nothing to grade" in capsys.readouterr().err and not (tmp_path / "h.csv").exists()


def test_grades_and_release_go_outside_the_working_tree_unless_named(tmp_path):
    from lora_lab.classroom.release import default_place, unignored_in_git

    assert not grading.default_out().is_relative_to(ROOT) and not default_place("course").is_relative_to(ROOT)
    assert unignored_in_git(ROOT / "grades.csv") is None and unignored_in_git(ROOT / "submissions" / "a.ipynb") is None
    assert unignored_in_git(ROOT / "notes" / "marks.csv") == ROOT  # a name the kit's .gitignore does not cover
    assert unignored_in_git(tmp_path / "grades.csv") is None  # not in a git working tree


# ----------------------------------------------------------------------------- grading fabricated submissions

RIGHT = {
    "compute_dtype_for": "    if gpu_name is None:\n        return torch.float32\n"
                         "    return torch.bfloat16 if bf16_supported else torch.float16\n",
    "weights_gib": "    return n_params * bits_per_param / 8 / 2**30\n",
    "llama2_row": '    return f"<s>[INST] {prompt} [/INST] {answer} </s>"\n',
}


def _answer(nb: dict, name: str, body: str, extra: str = "") -> None:
    """Replace the stub's body of `name` in its cell (the check call after it stays)."""
    for cell in nb["cells"]:
        src = _src(cell)
        if re.search(rf"^def {name}\(", src, re.M):
            head, rest = re.split(r"\n    raise NotImplementedError[^\n]*\n", src, maxsplit=1)
            cell["source"] = head + "\n" + body + extra + rest
            return
    raise AssertionError(f"no stub for {name}")


def _edit(nb: dict, name: str, fn) -> None:
    for cell in nb["cells"]:
        if re.search(rf"^def {name}\(", _src(cell), re.M):
            cell["source"] = fn(_src(cell))
            return
    raise AssertionError(name)


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


HOSTILE_NAME = '=HYPERLINK("evil.example","x")\x1b[2J\n  zoe  00.1:correct'


def make_submissions(course: Path, subs: Path, out: Path, outside: Path, port: int, marker: str) -> None:
    """Fill subs with notebook-00 submissions from the release in course: honest, careless and hostile ones. The
    hostile ones aim at out (the grades), outside (the instructor's files, made here), a listener on port, and
    leave processes whose command line holds marker."""
    nb00 = (course / "notebooks" / "00_start_here.ipynb").read_text()
    (outside / "secret.txt").write_text(f"SECRET-{marker}")
    (outside / "solutions").mkdir()
    (outside / "solutions" / "00_start_here_solutions.ipynb").write_text(f"SOLUTION-{marker}")

    def submit(student, change=None, text=None, whole=False):
        nb = json.loads(text or nb00)
        if not (whole or text):  # students may delete cells; sparing the model's load keeps this test quick
            first = next(i for i, c in enumerate(nb["cells"]) if "## The path through the kit" in _src(c))
            nb["cells"] = nb["cells"][:3] + nb["cells"][first:]
        if change:
            change(nb)
        (subs / student).mkdir()
        (subs / student / "00_start_here.ipynb").write_text(json.dumps(nb))

    def cell(nb, source, at=None):
        new = {"cell_type": "code", "id": uuid.uuid4().hex[:8], "metadata": {}, "outputs": [],
               "execution_count": None, "source": source}
        nb["cells"].insert(len(nb["cells"]) if at is None else at, new)

    def first_exercise(nb):
        return next(i for i, c in enumerate(nb["cells"]) if re.search(r"^def compute_dtype_for\(", _src(c), re.M))

    def all_right(nb):
        for name, body in RIGHT.items():
            _answer(nb, name, body)

    def wrong_then_right(nb):  # with a check call deleted, and a cell over the memory limit that fails alone
        _answer(nb, "compute_dtype_for", "    return torch.float16\n")
        _answer(nb, "weights_gib", RIGHT["weights_gib"])
        _answer(nb, "llama2_row", RIGHT["llama2_row"])
        _edit(nb, "llama2_row", lambda src: src.replace("check_llama2_format(llama2_row)", ""))
        cell(nb, "hog = bytearray(8 * 2**30)")

    def syntax_error(nb):  # and a wrong 00.3 made "right" by replacing the kit's reference in memory
        _answer(nb, "compute_dtype_for", RIGHT["compute_dtype_for"])
        _answer(nb, "weights_gib", "    return n_params * bits_per_param / 8 / 2**30)\n")
        _answer(nb, "llama2_row", '    return f"<s>[INST]{prompt}[/INST]{answer}</s>"\n',
                extra='\n\nlora_lab.tasks.format_llama2 = lambda prompt, answer: f"<s>[INST]{prompt}[/INST]{answer}</s>"\n')

    def endless_loop(nb):  # and an answer that stops its grading cell; the loop sleeps, leaving the core to others
        _answer(nb, "weights_gib", "    import time\n\n    while True:\n        time.sleep(0.05)\n")
        _answer(nb, "llama2_row", "    raise SystemExit('forged')\n")

    def redefined_check(nb):
        _answer(nb, "weights_gib", "    return n_params * bits_per_param / 8 / 1e9\n",
                extra='\n\ndef check_weights_gib(fn):\n    from lora_lab.exercises import Verdict\n\n'
                      '    return Verdict("Exercise 00.2 · weights_gib", True, "fine")\n')
        for c in nb["cells"]:  # and the stored output of the llama2_row cell edited to read "correct"
            if "def llama2_row(" in _src(c):
                c["outputs"] = [{"output_type": "execute_result", "execution_count": 9, "metadata": {},
                                 "data": {"text/plain": "Exercise 00.3 · llama2_row: correct — edited"}}]
                c["execution_count"] = 9

    def dies(nb):
        _answer(nb, "compute_dtype_for", RIGHT["compute_dtype_for"])
        _answer(nb, "weights_gib", "    return 0.0\n", extra="\n\nimport os\n\nos._exit(3)\n")

    def attacker(nb):
        targets = {"zoe's notebook": str(subs / "zoe" / "00_start_here.ipynb"), "the grades": str(out),
                   "the instructor's secret": str(outside / "secret.txt")}
        secrets = [str(outside / "secret.txt"), str(outside / "solutions" / "00_start_here_solutions.ipynb"),
                   str(outside / "solutions")]
        at = first_exercise(nb)
        cell(nb, attack_cell(targets, secrets, port, marker, "3600.5"), at)
        cell(nb, FORGE, at + 1)
        _answer(nb, "compute_dtype_for", "    _forge('display')\n    return torch.float16\n")
        _answer(nb, "weights_gib", "    _forge('print')\n    return 1.0\n")
        _answer(nb, "llama2_row", "    _forge('session')\n    return prompt\n")

    def forger(nb):
        _answer(nb, "compute_dtype_for", "    return torch.float16\n")
        cell(nb, OSCAR, first_exercise(nb))

    submit("carol", wrong_then_right)
    submit("dave", syntax_error)
    submit("erin", endless_loop)
    submit("frank", redefined_check)
    submit("gina", text=(course / "notebooks" / "01_low_rank_intuition.ipynb").read_text())
    submit("heidi", dies)
    submit("mallory", attacker)
    submit("oscar", forger)
    submit("zoe", all_right, whole=True)  # honest, graded last: nothing the others did may touch her grade
    (subs / "ivan.ipynb").write_text("{ this is not json")
    (subs / f"{HOSTILE_NAME}.ipynb").write_text("{}")
    (subs / "sol.ipynb").symlink_to(ROOT / "notebooks" / "solutions" / "00_start_here_solutions.ipynb")
    (subs / "quinn").mkdir()
    os.mkfifo(subs / "quinn" / "00_start_here.ipynb")


@pytest.fixture(scope="module")
def graded(student_copy, tmp_path_factory):
    need_sandbox()
    subs, outside = tmp_path_factory.mktemp("submissions"), tmp_path_factory.mktemp("instructor")
    out = tmp_path_factory.mktemp("grades") / "grades.csv"
    marker = f"lora-lab-test-{uuid.uuid4().hex}"
    listener = Listener()
    make_submissions(student_copy, subs, out, outside, listener.port, marker)
    kit_before, subs_before, outside_before = _digests(ROOT / "lora_lab"), _digests(subs), _digests(outside)
    limits = grading.Limits(timeout_s=240, cell_timeout_s=8, memory_gib=6)
    lines, scratch = [], tmp_path_factory.mktemp("tmp")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(tempfile, "tempdir", str(scratch))  # where the grader keeps its kit copy and sandboxes
            rows = grading.grade(subs, out, notebook="00", limits=limits, echo=lines.append, jobs=2)
    finally:
        listener.close()
    after = {"kit": _digests(ROOT / "lora_lab") == kit_before, "submissions": _digests(subs) == subs_before,
             "instructor": _digests(outside) == outside_before, "network": listener.received,
             "processes": processes(marker) + processes("3600.5"), "marker": marker,
             "left behind": sorted(p.name for p in scratch.iterdir())}
    return out, rows, "\n".join(lines), after


OK = "ok"
MEMORY = "ran with errors in 1 cell(s)"  # the memory hog; the test checks it is a MemoryError
ATTACKED = "ran with errors in 1 cell(s)"  # mallory's attack report
PATCHED = "replaced lora_lab.tasks.format_llama2 in memory; the check used the kit's own"
NOT_READ = ("unreadable: not a valid notebook", "could not be read", "")
EXPECTED = {  # (student, exercise): (status, run starts with, message contains, note contains)
    ("carol", "00.1"): ("wrong", MEMORY, "you chose torch.float16", ""),
    ("carol", "00.2"): ("correct", MEMORY, "", ""),
    ("carol", "00.3"): ("correct", MEMORY, "", "no longer calls check_llama2_format"),
    ("dave", "00.1"): ("correct", "ran with errors in 1 cell(s)", "", PATCHED),
    ("dave", "00.2"): ("wrong", "ran with errors in 1 cell(s)", "its cell raised SyntaxError", PATCHED),
    ("dave", "00.3"): ("wrong", "ran with errors in 1 cell(s)", "", PATCHED + "; the notebook's own check call said correct"),
    ("erin", "00.1"): ("not done", "ran with errors in 2 cell(s)", "NotImplementedError", ""),
    ("erin", "00.2"): ("not graded", "ran with errors in 2 cell(s)", "did not finish within 8 s", ""),
    ("erin", "00.3"): ("not graded", "ran with errors in 2 cell(s)", "grading cell raised SystemExit", ""),
    ("frank", "00.1"): ("not done", OK, "NotImplementedError", ""),
    ("frank", "00.2"): ("wrong", OK, "GB", "own check call said correct"),
    ("frank", "00.3"): ("not done", OK, "NotImplementedError", "submitted file shows this exercise correct"),
    ("gina", "00.1"): ("not graded", "wrong notebook: this is notebook 01, expected 00", "", ""),
    ("gina", "00.2"): ("not graded", "wrong notebook: this is notebook 01, expected 00", "", ""),
    ("gina", "00.3"): ("not graded", "wrong notebook: this is notebook 01, expected 00", "", ""),
    ("heidi", "00.1"): ("not graded", "kernel died in cell", "stopped before", ""),
    ("heidi", "00.2"): ("not graded", "kernel died in cell", "stopped before", ""),
    ("heidi", "00.3"): ("not graded", "kernel died in cell", "stopped before", ""),
    ("ivan", "00.1"): ("not graded", *NOT_READ),
    ("ivan", "00.2"): ("not graded", *NOT_READ),
    ("ivan", "00.3"): ("not graded", *NOT_READ),
    ("mallory", "00.1"): ("wrong", ATTACKED, "you chose torch.float16", ""),
    ("mallory", "00.2"): ("wrong", ATTACKED, "", ""),
    ("mallory", "00.3"): ("not graded", ATTACKED, "showed 2 verdicts", ""),
    ("oscar", "00.1"): ("not graded", OK, "builtins.open replaced", "lora_lab.tasks.format_llama2"),
    ("oscar", "00.2"): ("not graded", OK, "an import hook in sys.meta_path", "lora_lab.tasks.format_llama2"),
    ("oscar", "00.3"): ("not graded", OK, "json.dumps replaced", "lora_lab.tasks.format_llama2"),
    ("zoe", "00.1"): ("correct", OK, "", ""),
    ("zoe", "00.2"): ("correct", OK, "", ""),
    ("zoe", "00.3"): ("correct", OK, "", ""),
}
HOSTILE_STUDENT = "'" + HOSTILE_NAME.replace("\x1b", "\\x1b").replace("\n", "\\n")  # as the CSV writes it
EXPECTED |= {(HOSTILE_STUDENT, e): ("not graded", *NOT_READ) for e in ("00.1", "00.2", "00.3")}
SKIPPED = {"sol": "skipped: a symbolic link", "quinn": "skipped: a FIFO"}


def _csv(out: Path) -> list[dict]:
    with open(out, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_grades_csv_is_exactly_as_expected(graded):
    out, _, _, _ = graded
    rows = _csv(out)
    assert tuple(rows[0]) == grading.COLUMNS
    got = {(r["student"], r["exercise"].removeprefix("ex")): r for r in rows}
    skipped = {r["student"]: r for r in rows if not r["exercise"]}
    assert set(got) - {(s, "") for s in SKIPPED} == set(EXPECTED)
    assert len(rows) == len(EXPECTED) + len(SKIPPED), "a forged or repeated row"
    for student, run in SKIPPED.items():
        assert skipped[student]["run"].startswith(run) and skipped[student]["status"] == "not graded"
    for key, (status, run, message, note) in EXPECTED.items():
        r = got[key]
        assert r["status"] == status, (key, r)
        assert r["run"].startswith(run), (key, r["run"])
        assert message in r["message"], (key, r["message"])
        assert (note in r["note"]) if note else r["note"] == "", (key, r["note"])
        assert r["notebook"] == "nb00" and r["exercise"] == "ex" + key[1] and r["file"].endswith(".ipynb")
        if key[0] == "erin":
            assert r["run"].endswith("interrupted at the 8 s cell time limit"), r["run"]
        if key[0] == "carol":
            assert "MemoryError" in r["run"], r["run"]
        if status in ("correct", "wrong", "not done"):
            assert float(r["seconds"]) >= 0 and float(r["run_seconds"]) > 0, (key, r)


def test_hostile_submissions_reach_nothing_outside_their_sandbox(graded):
    out, _, printed, after = graded
    # the attack ran (its own report, in the run column), and every attempt failed
    report = next(r["run"] for r in _csv(out) if r["student"] == "mallory")
    assert "attack report: wrote 0 of" in report and "read 0 []" in report, report
    assert "network cut; daemon started" in report and re.search(r"; \d+ processes", report), report
    assert after["kit"] and after["submissions"] and after["instructor"], after
    assert after["network"] == [], after["network"]
    assert after["processes"] == [], f"processes of the run survived it: {after['processes']}"
    assert after["left behind"] == [], "the kit copy, a sandbox folder or a kernel connection file was left behind"
    # nothing of the instructor's reached the report, and the kit that graded zoe last was the kit's own
    text = out.read_text() + printed
    assert after["marker"] not in text and "SECRET-" not in text and "SOLUTION-" not in text
    assert {r["status"] for r in _csv(out) if r["student"] == "zoe"} == {"correct"}
    assert not list(Path(out.parent).glob("*.part"))


def test_forged_verdicts_do_not_count(graded):
    out, _, _, _ = graded
    rows = {(r["student"], r["exercise"].removeprefix("ex")): r for r in _csv(out)}
    oscar = [rows["oscar", e] for e in ("00.1", "00.2", "00.3")]
    for found in ("builtins.open replaced", "json.dumps replaced", "an import hook in sys.meta_path",
                  "a thread still running the notebook's forge()", "an IPython event hook on pre_run_cell"):
        assert all(found in r["message"] for r in oscar), (found, oscar[0]["message"])
    assert rows["mallory", "00.1"]["status"] == rows["mallory", "00.2"]["status"] == "wrong"


def test_names_and_messages_cannot_forge_lines_or_formulas(graded):
    out, _, printed, _ = graded
    assert "\x1b" not in printed and "\x1b" not in out.read_text()
    assert not [ln for ln in printed.splitlines() if ln.startswith("  zoe")], "a file name forged a printed line"
    for r in _csv(out):
        for column in ("student", "file", "run", "message", "note"):
            assert r[column][:1] not in ("=", "+", "-", "@"), (column, r[column])
    mallory = next(r for r in _csv(out) if r["student"] == "mallory")
    assert "\\x1b[2J" in mallory["run"]


def test_summary_totals_and_plot_are_written(graded):
    out, rows, printed, _ = graded
    table = grading.summary_table(rows)
    assert table in printed
    line = next(ln for ln in table.splitlines() if ln.startswith("00.2"))
    assert line.split()[1:5] == ["2", "3", "0", "6"]  # correct, wrong, not done, not graded
    assert "sandbox" in printed.splitlines()[1] and "bubblewrap" in printed.splitlines()[1]
    with open(out.with_name("grades-totals.csv"), newline="") as f:
        totals = {t["student"]: t for t in csv.DictReader(f)}
    assert totals["zoe"]["correct"] == "3" and totals["zoe"]["score"] == "1.0"
    assert totals["carol"]["correct"] == "2" and totals["carol"]["exercises"] == "3"
    assert totals["sol"]["exercises"] == "0"
    assert out.with_suffix(".png").stat().st_size > 5000
    assert re.search(r"\[\d+/11\].*about .* left", printed), printed


def test_grade_refuses_without_a_sandbox_unless_told(tmp_path, capsys, monkeypatch):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "a.ipynb").write_text("{}")
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    assert main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "g.csv")]) == 2
    err = capsys.readouterr().err
    assert "bubblewrap" in err and "--unsafe-no-sandbox" in err and "other students' notebooks" in err
    assert not (tmp_path / "g.csv").exists()
    assert main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "g.csv"),
                 "--unsafe-no-sandbox"]) == 0
    printed = capsys.readouterr().out
    assert "NO SANDBOX" in printed and "unreadable" in (tmp_path / "g.csv").read_text()


def test_a_worker_that_fails_before_reporting_is_named_in_the_run_column(student_copy, tmp_path, monkeypatch):
    # a kit installed without the grader's Jupyter client: the worker's import fails before its first event
    python = tmp_path / "python"
    python.write_text(f"""#!/bin/sh
exec {sys.executable} -c 'import runpy, sys; sys.modules["nbclient"] = None; del sys.argv[:2]; runpy.run_module(sys.argv[0], run_name="__main__")' "$@"
""")
    python.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(python))
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "amy.ipynb").write_text((student_copy / "notebooks" / "00_start_here.ipynb").read_text())
    rows = grading.grade(tmp_path / "subs", tmp_path / "g.csv", notebook="00", limits=grading.Limits(),
                         echo=lambda *a: None, unsafe=True)
    assert len(rows) == 3 and {r.status for r in rows} == {"not graded"}
    for r in rows:
        assert r.run.startswith("could not run: the grader's worker stopped before it finished (exit code 1)"), r.run
        assert "nbclient" in r.run and "stopped before this exercise" in r.message, r


def test_the_readmes_pandas_snippet_reads_the_csv_with_exercises_as_text(tmp_path, monkeypatch):
    pytest.importorskip("pandas")
    rows = [grading.Row("amy", "amy.ipynb", "00", "ok", "00.1", "correct"),
            grading.Row("amy", "amy.ipynb", "00", "ok", "00.2", "wrong", "=1+1"),
            grading.Row("bo", "bo.ipynb", "?", "unreadable", "", "not graded")]
    grading.report.write_csv(rows, tmp_path / "grades.csv")
    snippet = re.search(r"```python\n(import pandas as pd\n.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    monkeypatch.chdir(tmp_path)
    space = {}
    exec(snippet, space)
    assert list(space["rows"].exercise) == ["ex00.1", "ex00.2"] and list(space["rows"].notebook) == ["nb00", "nb00"]
    assert space["grade"].to_dict() == {"amy": 5.0}


def test_report_text_is_neutralised():
    from lora_lab.classroom.report import _kind, csv_cell, plain

    assert plain("a\nb\x1b[2J\u202ec") == "a\\nb\\x1b[2J\\u202ec" and plain("Bài tập ổn") == "Bài tập ổn"
    assert [csv_cell(v) for v in ("=1+1", "+x", "-2", "@SUM(A1)", "fine", 3.5)] == \
        ["'=1+1", "'+x", "'-2", "'@SUM(A1)", "fine", 3.5]
    assert _kind("you chose torch.float16, not torch.bfloat16: the T4's 15 GiB, Llama-2-7B, r=8") == \
        "you chose torch.float16, not torch.bfloat16: the T4's # GiB, Llama-2-7B, r=#"
