"""A copy of the kit to hand to students: `lora-lab classroom release OUT/`.

What goes in: the numbered notebooks (English, and Vietnamese where built) with their exercise stubs, the
package, the embedded model and data, pyproject.toml with the lock, environment.yml, a two-target Makefile
(`make lab`) and a README for students. What stays out: every solutions notebook, the translation sources
(they hold the solutions' code too), the tests (they answer every exercise) and the benchmarks. In the
notebooks, the outputs of exercise cells are cleared, mentions of the solutions folder point to the
instructor instead, and each notebook's number is stored in its metadata for the grader.

The exercise checks carry no readable reference answer: each one computes its reference by calling the
kit's own implementation at check time (`lora_lab.nf4`, `lora_lab.lora`, ...). Those modules implement
every exercise, by design, since the notebooks import them after building each piece by hand; see the
README's section for instructors for what that means for grading.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from .. import paths

ROOT = paths._PACKAGE.parent  # a clone: releases are made from a checkout of the kit
PUBLIC = "lora-lab/lora-lab"
_SOLUTIONS = re.compile(r"`notebooks/(?:vi/)?solutions/[^`]*`|\[[^\]]*\]\([^)]*/solutions/[^)]*\)")
_CHECK_CALL = re.compile(r"^\s*check_\w+\(", re.M)
INSTRUCTOR = {"en": "your instructor's copy", "vi": "bản của giảng viên"}
# "Solutions: `notebooks/solutions/…`." as a whole sentence, in either language
_SOLUTIONS_SENTENCE = {"en": (re.compile(r"Solutions:\s*`notebooks/solutions/[^`]*`\."), "Your instructor has the solutions."),
                       "vi": (re.compile(r"Lời\s+giải(?:\s+\(solutions?\))?:\s*`notebooks/vi/solutions/[^`]*`\."),
                              "Lời giải do giảng viên của bạn giữ.")}

MAKEFILE = """\
# The student copy of lora-lab: `make lab` creates .venv with the tested versions and opens JupyterLab.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: lab venv

$(STAMP): pyproject.toml constraints.txt
\ttest -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
\t$(BIN)/python -m pip install -q --upgrade pip
\t$(BIN)/python -m pip install -q -c constraints.txt torch==2.13.0 -e ".[dev]"
\ttouch $(STAMP)

venv: $(STAMP)

lab: $(STAMP)
\t$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(DISPLAY),,--no-browser) \\
\t\t$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)
"""

README = """\
# lora-lab: your exercises

This folder is your copy of [lora-lab](https://github.com/lora-lab/lora-lab), a course that builds LoRA and
QLoRA from scratch. Your instructor gave it to you; hand your notebooks back the way they ask.

## Start

    make lab        # first time: creates .venv (a few minutes), then opens JupyterLab on notebooks/

Or open a notebook in Colab with the badge at its top. Without `make`: `python3 -m venv .venv`, then
`.venv/bin/pip install -c constraints.txt torch==2.13.0 -e ".[dev]"` and `.venv/bin/jupyter lab`.

The notebooks are in `notebooks/`; the same notebooks in Vietnamese are in `notebooks/vi/` (see README.vi.md).

## Exercises

Each notebook ends with exercises. Every exercise is a function with a stub that raises
`NotImplementedError`, followed by a check. Write your answer in place of the `raise`, run the cell, and
the check tells you whether it is correct, not done yet, or not yet right, and what to look at.

When your notebook is graded, it is run from top to bottom on its own, and the same checks are called on
your functions. So: keep the function names, make sure "Restart kernel and run all" works, and keep each
cell quick (a cell that runs for minutes is stopped).
"""

README_VI = """\
# lora-lab: bài tập của bạn

Thư mục này là bản [lora-lab](https://github.com/lora-lab/lora-lab) của bạn: một khóa học tự xây dựng LoRA
và QLoRA từ đầu. Giảng viên đã gửi nó cho bạn; hãy nộp lại notebook theo cách giảng viên yêu cầu.

## Bắt đầu

    make lab        # lần đầu: tạo .venv (vài phút), rồi mở JupyterLab ở notebooks/

Hoặc mở notebook trên Colab bằng nút ở đầu notebook. Không dùng `make`: chạy `python3 -m venv .venv`, rồi
`.venv/bin/pip install -c constraints.txt torch==2.13.0 -e ".[dev]"` và `.venv/bin/jupyter lab`.

Các notebook tiếng Việt nằm trong `notebooks/vi/`, kèm [bảng thuật ngữ Việt ↔ Anh](notebooks/vi/GLOSSARY.md).

## Bài tập

Cuối mỗi notebook có các bài tập. Mỗi bài là một hàm đang `raise NotImplementedError`, theo sau là một hàm
kiểm tra. Viết lời giải thay cho dòng `raise`, chạy ô đó, và hàm kiểm tra sẽ nói bài của bạn đúng, chưa làm
hay chưa đúng, và cần xem lại chỗ nào.

Khi chấm, notebook của bạn được chạy lại từ đầu đến cuối và các hàm kiểm tra được gọi trên chính các hàm
của bạn. Vì vậy: giữ nguyên tên hàm, bảo đảm "Restart kernel and run all" chạy được, và giữ mỗi ô chạy
nhanh (một ô chạy quá lâu sẽ bị dừng).
"""


def _src(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def student_notebook(nb: dict, number: str, language: str, repository: str | None) -> dict:
    """The notebook as students get it: exercise outputs cleared, no way to the solutions, its number stored."""
    for cell in nb["cells"]:
        src = _src(cell)
        if cell["cell_type"] == "markdown":
            sentence, instead = _SOLUTIONS_SENTENCE[language]
            src = _SOLUTIONS.sub(INSTRUCTOR[language], sentence.sub(instead, src))
        elif _CHECK_CALL.search(src):
            cell["outputs"], cell["execution_count"] = [], None
        if repository:
            src = src.replace(PUBLIC, repository)
        cell["source"] = src
    nb["metadata"].pop("jupytext", None)
    nb["metadata"]["lora_lab"] = {"notebook": number, "language": language}
    return nb


def kit_clone() -> Path | None:
    """The clone of the kit releases are made from, or None: the folder holding the imported package when it has
    notebooks/ (a clone, or an editable install of one), else the current folder when it is a clone of the kit
    (notebooks/, lora_lab/ and a pyproject.toml for lora-lab), as after a plain `pip install .` run from the clone."""
    if (ROOT / "notebooks").is_dir():
        return ROOT
    here, project = Path.cwd(), Path.cwd() / "pyproject.toml"
    if (here / "notebooks").is_dir() and (here / "lora_lab").is_dir() and project.is_file() \
            and re.search(r'^name\s*=\s*"lora-lab"', project.read_text(), re.M):
        return here
    return None


def default_place(name: str) -> Path:
    """Where the classroom commands write when not told: beside the clone (outside its working tree), else here."""
    clone = kit_clone()
    return (clone.parent if clone is not None else Path.cwd()) / name


def unignored_in_git(path: Path) -> Path | None:
    """The git working tree holding path, if path is in one and git does not ignore it (else None): a `git add -A`
    there would commit it. None too where git is not installed."""
    here = path.resolve().parent
    while not here.exists():
        here = here.parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
        if top.returncode != 0:
            return None
        ignored = subprocess.run(["git", "-C", top.stdout.strip(), "check-ignore", "-q", str(path.resolve())],
                                 capture_output=True)
    except OSError:
        return None
    return Path(top.stdout.strip()) if ignored.returncode == 1 else None


def release(out: Path | None = None, repository: str | None = None) -> Path:
    """Write the student copy to out (which must not exist, or be an empty folder). Returns out.

    out: by default `lora-lab-course` beside the clone, outside its working tree.

    repository: "owner/name" of a GitHub repository the instructor pushes the release to, so that the
    notebooks' Colab badges and install cell fetch the release (without solutions) instead of the public kit.
    Raises FileExistsError for a non-empty out and ValueError for a malformed repository.
    """
    out = Path(out) if out is not None else default_place("lora-lab-course")
    if repository is not None and not re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
        raise ValueError(f"repository={repository!r}: give the GitHub repository as owner/name, e.g. myclass/lora")
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file: give a new folder for the release")
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty: give a new folder (a release never overwrites)")
    clone = kit_clone()
    if clone is None:
        raise FileNotFoundError(
            f"no clone of the kit here ({Path.cwd()}) and none beside the installed package ({paths._PACKAGE}): a "
            "release is made from a clone, which holds the notebooks. Run the command from the clone's folder (the one "
            "with notebooks/ and pyproject.toml), or install the kit from it editable (make lab, or pip install -e .)")
    partial = out.parent / f".{out.name}.partial"  # written aside, renamed at the end: no half release
    shutil.rmtree(partial, ignore_errors=True)
    _write(partial, repository, clone)
    if out.exists():
        out.rmdir()
    partial.rename(out)
    return out


def _write(out: Path, repository: str | None, clone: Path) -> None:
    """The release, all of it from the clone (its package, data and notebooks), never mixed with an installed kit."""
    out.mkdir(parents=True)
    shutil.copytree(clone / "lora_lab", out / "lora_lab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copytree(clone / "data", out / "data")
    for name in ("pyproject.toml", "constraints.txt", "environment.yml", "LICENSE", ".gitignore"):
        if (clone / name).exists():
            shutil.copy(clone / name, out / name)
    (out / "Makefile").write_text(MAKEFILE)
    (out / "README.md").write_text(README)
    for folder, language in ((clone / "notebooks", "en"), (clone / "notebooks" / "vi", "vi")):
        for path in sorted(folder.glob("[0-9][0-9]_*.ipynb")):
            nb = student_notebook(json.loads(path.read_text()), path.name[:2], language, repository)
            dest = out / path.relative_to(clone)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    if (out / "notebooks" / "vi").is_dir():
        shutil.copy(clone / "notebooks" / "vi" / "GLOSSARY.md", out / "notebooks" / "vi" / "GLOSSARY.md")
        (out / "README.vi.md").write_text(README_VI)
