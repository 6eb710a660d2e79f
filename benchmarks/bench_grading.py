"""What the grader's sandbox costs: seconds to grade each notebook in its bubblewrap sandbox and without one
(`--unsafe-no-sandbox`), the two runs alternated, one submission at a time.

    python benchmarks/bench_grading.py [--which solutions|release] [--notebooks 00 02 ...]

solutions: the worked answers in notebooks/solutions/ (every exercise answered, the teaching cells trimmed);
release: the student copy's notebooks as handed out (every teaching cell, no answer). Prints, per notebook,
the seconds the notebook ran (the grader's `run_seconds`: kernel start, every cell, the grading cells) and
the seconds `grade()` took in all (the kit copy, the plot and the CSV included).
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from lora_lab.classroom.grade import Limits, exercises_by_notebook, grade
from lora_lab.classroom.release import release

ROOT = Path(__file__).resolve().parent.parent


def _one(notebook: Path, number: str, unsafe: bool, scratch: Path) -> tuple[float, float, str]:
    """(run seconds, grade seconds, statuses) of one notebook graded alone."""
    folder = Path(tempfile.mkdtemp(dir=scratch))
    (folder / "subs").mkdir()
    shutil.copy(notebook, folder / "subs" / f"{number}.ipynb")
    start = time.perf_counter()
    rows = grade(folder / "subs", folder / "g.csv", notebook=number, limits=Limits(), echo=lambda *a: None,
                 unsafe=unsafe)
    total = time.perf_counter() - start
    return float(rows[0].run_seconds), total, " ".join(sorted({r.status for r in rows}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", choices=("solutions", "release"), default="solutions")
    parser.add_argument("--notebooks", nargs="*", default=sorted(exercises_by_notebook()))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-grading-"))
    try:
        if args.which == "solutions":
            found = {n: next((ROOT / "notebooks" / "solutions").glob(f"{n}_*.ipynb")) for n in args.notebooks}
        else:
            course = release(scratch / "course")
            found = {n: next((course / "notebooks").glob(f"{n}_*.ipynb")) for n in args.notebooks}
        print(f"{'notebook':<10}{'sandbox s':>10}{'none s':>9}{'extra s':>9}   (grade() in all: sandbox / none)  statuses")
        for number, path in found.items():
            boxed = _one(path, number, False, scratch)
            bare = _one(path, number, True, scratch)
            print(f"{number:<10}{boxed[0]:>10.1f}{bare[0]:>9.1f}{boxed[0] - bare[0]:>9.1f}   "
                  f"({boxed[1]:.1f} / {bare[1]:.1f})  {boxed[2]} | {bare[2]}", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
