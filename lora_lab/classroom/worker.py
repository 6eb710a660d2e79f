"""Run one submitted notebook and grade its exercises: the part of the grader that runs in the sandbox.

`python -m lora_lab.classroom.worker SPEC.json` is started by `grade.py` in a scratch folder, with a memory
limit, a process group the grader kills at the notebook's time limit and, where Linux allows it, no
network. It executes every cell of the submission (an error or a cell over its time limit is recorded and
the next cell runs), then appends one grading cell per exercise. A grading cell imports the kit's exercise
checks afresh from disk, so a check the notebook redefined or patched is replaced by the kit's own, and calls the
check on the learner's function or class. Every event is appended at once to SPEC's results file (one JSON
object a line), so what happened before a kill survives it.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

GRADING_CELL = '''\
# lora-lab grader: exercise {exercise_id} (added at grading time; not part of the submission)
def __lora_lab_grade(exercise_id, answer_name, results, hashes, language):
    import hashlib, importlib, json, pathlib, sys, time
    kit = pathlib.Path(sys.modules["lora_lab"].__file__).parent
    changed = [name for name, digest in hashes.items()
               if hashlib.sha256((kit / name).read_bytes()).hexdigest() != digest]
    # the kit's functions and classes replaced in memory by code from the notebook (a check's references)
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] != "lora_lab" or name.startswith("lora_lab.exercises"):
            continue
        for attr, value in list(vars(module).items()):
            found = [(attr, value)]
            if isinstance(value, type) and value.__module__.startswith("lora_lab"):
                found += [(attr + "." + k, v) for k, v in vars(value).items()]
            for where, v in found:
                v = getattr(v, "__func__", v)
                if getattr(v, "__module__", None) == "__main__" or "ipykernel" in getattr(
                        getattr(v, "__code__", None), "co_filename", ""):
                    changed.append(name + "." + where + " (replaced in memory)")
    row = {{"kind": "grade", "exercise": exercise_id}}
    if changed:
        row.update(status="not graded", message="the notebook changed the kit itself: " + ", ".join(changed))
    else:
        for name in [m for m in sys.modules if m == "lora_lab.exercises" or m.startswith("lora_lab.exercises.")]:
            del sys.modules[name]  # then imported afresh: the kit's checks as on disk, whatever the notebook did
        exercises = importlib.import_module("lora_lab.exercises")
        exercises.set_language(language)
        check = next(c for c in exercises.EXERCISES if c.exercise_id == exercise_id)
        answer = globals().get(answer_name)
        start = time.perf_counter()
        if answer is None:
            row.update(status="missing", message=answer_name + " is not defined in the notebook")
        else:
            verdict = check(answer)
            row.update(status=verdict.status, message=verdict.message)
        row["seconds"] = round(time.perf_counter() - start, 3)
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\\n")


__lora_lab_grade({exercise_id!r}, {answer_name!r}, {results!r}, {hashes!r}, {language!r})
'''


def _record(results: Path, **row) -> None:
    with open(results, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def _limit_memory(gib: float) -> None:
    cap = int(gib * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))  # inherited by the kernel this process starts


def run(spec_path: Path) -> None:
    import nbformat
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    spec = json.loads(spec_path.read_text())
    results = Path(spec["results"])
    _limit_memory(spec["memory_gib"])
    nb = nbformat.read(spec["notebook"], as_version=4)
    n_student = len(nb.cells)
    for ex in spec["exercises"]:
        src = GRADING_CELL.format(exercise_id=ex["id"], answer_name=ex["answer"], results=str(results),
                                  hashes=spec["hashes"], language=spec["language"])
        nb.cells.append(nbformat.v4.new_code_cell(src))

    def executed(cell, cell_index, execute_reply):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error" and cell_index < n_student:
                _record(results, kind="cell error", cell=cell_index, ename=out.get("ename", ""),
                        evalue=str(out.get("evalue", ""))[:300])
            elif out.get("output_type") == "error":
                _record(results, kind="grader error", cell=cell_index, ename=out.get("ename", ""),
                        evalue=str(out.get("evalue", ""))[:300])
        if cell_index < n_student:  # what the notebook itself showed for its check calls, this run
            text = "\n".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
                             for o in cell.get("outputs", []))
            _record(results, kind="cell", cell=cell_index, shown=text[-2000:])

    # ipc sockets: the kernel needs no network interface, so it runs where the network is cut
    km = AsyncKernelManager(kernel_name="python3", transport="ipc", ip=str(Path.cwd() / "kernel-ipc"))
    current = [None]
    client = NotebookClient(nb, km=km, timeout=spec["cell_timeout_s"], interrupt_on_timeout=True,
                            allow_errors=True, record_timing=False, on_cell_executed=executed,
                            on_cell_start=lambda cell, cell_index: current.__setitem__(0, cell_index),
                            resources={"metadata": {"path": str(Path.cwd())}})
    start = time.perf_counter()
    try:
        client.execute()
    except DeadKernelError as e:
        _record(results, kind="dead", cell=current[0], detail=str(e)[:300])
    except Exception as e:  # noqa: BLE001 - anything else that stops the run is reported, not raised
        _record(results, kind="failed", detail=f"{type(e).__name__}: {e}"[:300])
    _record(results, kind="done", seconds=round(time.perf_counter() - start, 1))


if __name__ == "__main__":
    run(Path(sys.argv[1]))
