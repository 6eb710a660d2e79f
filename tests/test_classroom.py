"""The classroom tools: a student release with no way to the answers, and a grader that cannot be fooled easily.

The grading test builds a release, fills notebook 00 the ways students do (right, untouched, wrong then right,
a syntax error, an endless loop, a check redefined and its stored output edited, another notebook, a kernel
that dies, the kit patched in memory) and compares the whole CSV with what it must say.
"""

import csv
import json
import re
from pathlib import Path

import pytest

from lora_lab.classroom import grade as grading
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
    assert main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "no" / "h.csv")]) == 2
    assert "--out: the folder" in capsys.readouterr().err
    assert main(["classroom", "grade", str(tmp_path / "subs"), "--out", str(tmp_path / "h.csv")]) == 2
    assert "nothing to grade" in capsys.readouterr().err and not (tmp_path / "h.csv").exists()


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


@pytest.fixture(scope="module")
def graded(student_copy, tmp_path_factory):
    nb00 = (student_copy / "notebooks" / "00_start_here.ipynb").read_text()
    subs = tmp_path_factory.mktemp("submissions")

    def submit(student, change=None, text=None, whole=False):
        nb = json.loads(text or nb00)
        if not (whole or text):  # students may delete cells; sparing the model's load keeps this test quick
            first = next(i for i, c in enumerate(nb["cells"]) if "## The path through the kit" in _src(c))
            nb["cells"] = nb["cells"][:3] + nb["cells"][first:]
        if change:
            change(nb)
        (subs / student).mkdir()
        (subs / student / "00_start_here.ipynb").write_text(json.dumps(nb))

    def all_right(nb):
        for name, body in RIGHT.items():
            _answer(nb, name, body)

    def wrong_then_right(nb):  # with a check call deleted, and a cell over the memory limit that fails alone
        _answer(nb, "compute_dtype_for", "    return torch.float16\n")
        _answer(nb, "weights_gib", RIGHT["weights_gib"])
        _answer(nb, "llama2_row", RIGHT["llama2_row"])
        _edit(nb, "llama2_row", lambda src: src.replace("check_llama2_format(llama2_row)", ""))
        nb["cells"].append({"cell_type": "code", "id": "memory-hog", "metadata": {}, "outputs": [],
                            "execution_count": None, "source": "hog = bytearray(8 * 2**30)"})

    def syntax_error(nb):
        _answer(nb, "compute_dtype_for", RIGHT["compute_dtype_for"])
        _answer(nb, "weights_gib", "    return n_params * bits_per_param / 8 / 2**30)\n")

    def endless_loop(nb):
        _answer(nb, "weights_gib", "    while True:\n        pass\n")

    def redefined_check(nb):
        _answer(nb, "weights_gib", "    return n_params * bits_per_param / 8 / 1e9\n",
                extra='\n\ndef check_weights_gib(fn):\n    from lora_lab.exercises import Verdict\n\n'
                      '    return Verdict("Exercise 00.2 · weights_gib", True, "fine")\n')
        for cell in nb["cells"]:  # and the stored output of the llama2_row cell edited to read "correct"
            if "def llama2_row(" in _src(cell):
                cell["outputs"] = [{"output_type": "execute_result", "execution_count": 9, "metadata": {},
                                    "data": {"text/plain": "Exercise 00.3 · llama2_row: correct — edited"}}]
                cell["execution_count"] = 9

    def patches_the_kit(nb):  # the reference 00.3 is checked against, replaced by the student's own
        _answer(nb, "llama2_row", '    return f"<s>[INST]{prompt}[/INST]{answer}</s>"\n',
                extra='\n\nlora_lab.tasks.format_llama2 = lambda prompt, answer: f"<s>[INST]{prompt}[/INST]{answer}</s>"\n')

    def dies(nb):
        _answer(nb, "compute_dtype_for", RIGHT["compute_dtype_for"])
        _answer(nb, "weights_gib", "    return 0.0\n", extra="\n\nimport os\n\nos._exit(3)\n")

    submit("alice", all_right, whole=True)
    submit("bob")
    submit("carol", wrong_then_right)
    submit("dave", syntax_error)
    submit("erin", endless_loop)
    submit("frank", redefined_check)
    submit("gina", text=(student_copy / "notebooks" / "01_low_rank_intuition.ipynb").read_text())
    submit("heidi", dies)
    submit("judy", patches_the_kit)
    (subs / "ivan.ipynb").write_text("{ this is not json")
    out = tmp_path_factory.mktemp("grades") / "grades.csv"
    limits = grading.Limits(timeout_s=240, cell_timeout_s=8, memory_gib=6)
    lines = []
    rows = grading.grade(subs, out, notebook="00", limits=limits, echo=lines.append)
    return out, rows, "\n".join(lines)


OK = "ok"
MEMORY = "ran with errors in 1 cell(s)"  # the memory hog; the test checks it is a MemoryError
EXPECTED = {  # (student, exercise): (status, run starts with, message contains, note contains)
    ("alice", "00.1"): ("correct", OK, "", ""),
    ("alice", "00.2"): ("correct", OK, "", ""),
    ("alice", "00.3"): ("correct", OK, "", ""),
    ("bob", "00.1"): ("not done", OK, "NotImplementedError", ""),
    ("bob", "00.2"): ("not done", OK, "NotImplementedError", ""),
    ("bob", "00.3"): ("not done", OK, "NotImplementedError", ""),
    ("carol", "00.1"): ("wrong", MEMORY, "you chose torch.float16", ""),
    ("carol", "00.2"): ("correct", MEMORY, "", ""),
    ("carol", "00.3"): ("correct", MEMORY, "", "no longer calls check_llama2_format"),
    ("dave", "00.1"): ("correct", "ran with errors in 1 cell(s)", "", ""),
    ("dave", "00.2"): ("wrong", "ran with errors in 1 cell(s)", "its cell raised SyntaxError", ""),
    ("dave", "00.3"): ("not done", "ran with errors in 1 cell(s)", "NotImplementedError", ""),
    ("erin", "00.1"): ("not done", "ran with errors in 1 cell(s)", "NotImplementedError", ""),
    ("erin", "00.2"): ("wrong", "ran with errors in 1 cell(s)", "did not finish within 8 s", ""),
    ("erin", "00.3"): ("not done", "ran with errors in 1 cell(s)", "NotImplementedError", ""),
    ("frank", "00.1"): ("not done", OK, "NotImplementedError", ""),
    ("frank", "00.2"): ("wrong", OK, "GB", "own check call said correct"),
    ("frank", "00.3"): ("not done", OK, "NotImplementedError", "submitted file shows this exercise correct"),
    ("gina", "00.1"): ("not graded", "wrong notebook: this is notebook 01, expected 00", "", ""),
    ("gina", "00.2"): ("not graded", "wrong notebook: this is notebook 01, expected 00", "", ""),
    ("gina", "00.3"): ("not graded", "wrong notebook: this is notebook 01, expected 00", "", ""),
    ("heidi", "00.1"): ("not graded", "kernel died in cell", "stopped before", ""),
    ("heidi", "00.2"): ("not graded", "kernel died in cell", "stopped before", ""),
    ("heidi", "00.3"): ("not graded", "kernel died in cell", "stopped before", ""),
    ("judy", "00.1"): ("not graded", OK, "lora_lab.tasks.format_llama2 (replaced in memory)", ""),
    ("judy", "00.2"): ("not graded", OK, "lora_lab.tasks.format_llama2 (replaced in memory)", ""),
    ("judy", "00.3"): ("not graded", OK, "lora_lab.tasks.format_llama2 (replaced in memory)", ""),
    ("ivan", "00.1"): ("not graded", "unreadable: not a valid notebook", "could not be read", ""),
    ("ivan", "00.2"): ("not graded", "unreadable: not a valid notebook", "could not be read", ""),
    ("ivan", "00.3"): ("not graded", "unreadable: not a valid notebook", "could not be read", ""),
}


def test_grades_csv_is_exactly_as_expected(graded):
    out, _, _ = graded
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == grading.COLUMNS
    got = {(r["student"], r["exercise"]): r for r in rows}
    assert set(got) == set(EXPECTED) and len(rows) == len(EXPECTED)
    for key, (status, run, message, note) in EXPECTED.items():
        r = got[key]
        assert r["status"] == status, (key, r)
        assert r["run"].startswith(run), (key, r["run"])
        assert message in r["message"], (key, r["message"])
        assert (note in r["note"]) if note else r["note"] == "", (key, r["note"])
        assert r["notebook"] == "00" and r["file"].endswith(".ipynb")
        if key[0] == "erin":
            assert r["run"].endswith("interrupted at the 8 s cell time limit"), r["run"]
        if key[0] == "carol":
            assert "MemoryError" in r["run"], r["run"]
        if status in ("correct", "wrong", "not done"):
            assert float(r["seconds"]) >= 0 and float(r["run_seconds"]) > 0, (key, r)


def test_summary_is_printed_and_drawn(graded):
    out, rows, printed = graded
    table = grading.summary_table(rows)
    assert table in printed
    line = next(ln for ln in table.splitlines() if ln.startswith("00.2"))
    assert line.split()[1:5] == ["2", "3", "1", "4"]  # correct, wrong, not done, not graded
    assert out.with_suffix(".png").stat().st_size > 5000
