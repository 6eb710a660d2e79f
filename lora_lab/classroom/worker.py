"""Run one submitted notebook in its sandbox and read its grades: `python -m lora_lab.classroom.worker SPEC.json PID`.

`grade.py` starts this process outside the sandbox, one per submission. It runs the Jupyter client
(nbclient); the kernel it starts is the sandboxed command SPEC names (`sandbox.Sandbox.wrap`), so the
student's code runs in the sandbox and this process, its memory and its pipes stay out of its reach. Every
cell of the submission runs (an error or a cell over its time limit is recorded and the next cell runs), then
one grading cell per exercise (`inkernel.grade`). Each exercise's verdict is read only from its own grading
cell's output as this client received it: exactly one display of `inkernel.MIME` carrying this run's secret.
A grading cell that did not finish, or showed no verdict or more than one, leaves its exercise not graded.

Events go to the grader as JSON lines on this process's standard output, which nothing else writes to
(the kernel's own output goes to /dev/null), each as soon as it happens, so a run stopped at its time
limit still reports what it did.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from .inkernel import MIME

STATUSES = ("correct", "wrong", "not done", "missing", "not graded")  # what inkernel.grade writes

GRADING_CELL = '''\
# lora-lab grader: exercise {exercise_id} (added at grading time; not part of the submission)
def __lora_lab_grade():
    import importlib.util
    spec = importlib.util.spec_from_file_location("lora_lab_grading", {module!r})
    grading = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(grading)
    grading.grade({exercise_id!r}, {answer_name!r}, globals(), trusted={trusted!r}, language={language!r},
                  nonce={nonce!r}, inductor={inductor!r})


__lora_lab_grade()
del __lora_lab_grade
'''


def _text(outputs) -> str:
    return "\n".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", "")) for o in outputs)


def verdict_of(exercise_id: str, outputs: list, nonce: str) -> tuple[dict | None, str]:
    """(the verdict a grading cell showed, or None, and why not): one display carrying the secret, no other."""
    shown = [o.get("data", {}).get(MIME) for o in outputs if o.get("output_type") == "display_data"
             and MIME in o.get("data", {})]
    if not shown:
        return None, "the grading cell showed no verdict"
    ours = [v for v in shown if isinstance(v, dict) and v.get("nonce") == nonce and v.get("exercise") == exercise_id
            and v.get("status") in STATUSES]
    if len(shown) > 1:
        why = (f"the grading cell showed {len(shown)} verdicts, so code from the notebook forged at least one; "
               "none is kept")
        refused = [v for v in ours if v.get("status") == "not graded"]  # no forger writes this one
        return None, why + (f"; the grader's own said {refused[0].get('message', '')}" if len(ours) == 1 and refused
                            else "")
    if not ours:
        return None, "the grading cell showed a verdict the grader did not write"
    return ours[0], ""


def run(spec_path: Path, events) -> None:
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    def emit(**event) -> None:
        events.write(json.dumps(event) + "\n")
        events.flush()

    spec = json.loads(spec_path.read_text())
    nonce = secrets.token_hex(16)
    nb = nbformat.reads(Path(spec["notebook"]).read_text(encoding="utf-8"), as_version=4)
    n_student = len(nb.cells)
    exercises = {}
    for ex in spec["exercises"]:
        exercises[len(nb.cells)] = ex["id"]
        nb.cells.append(nbformat.v4.new_code_cell(GRADING_CELL.format(
            exercise_id=ex["id"], answer_name=ex["answer"], module=spec["grading_module"],
            trusted=spec["trusted"], language=spec["language"], nonce=nonce, inductor=spec["inductor"])))

    def executed(cell, cell_index, execute_reply):
        outputs = cell.get("outputs", [])
        errors = [o for o in outputs if o.get("output_type") == "error"]
        if cell_index < n_student:
            for o in errors:
                emit(kind="cell error", cell=cell_index, ename=str(o.get("ename", ""))[:100],
                     evalue=str(o.get("evalue", ""))[:300])
            emit(kind="cell", cell=cell_index, shown=_text(outputs)[-2000:])  # for the notes: what it claimed
            return
        exercise = exercises[cell_index]
        verdict, why = verdict_of(exercise, outputs, nonce)
        mine = [o["data"][MIME] for o in outputs if o.get("output_type") == "display_data" and
                isinstance(o.get("data", {}).get(MIME), dict) and o["data"][MIME].get("nonce") == nonce]
        replaced = [str(n)[:100] for v in mine for n in v.get("replaced", [])][:6]
        if replaced:  # the kit's names the notebook replaced in memory: a note on every exercise
            emit(kind="kit replaced", names=replaced)
        if verdict is not None and not errors:
            emit(kind="grade", exercise=exercise, status=str(verdict.get("status")),
                 message=str(verdict.get("message", ""))[:2000], seconds=verdict.get("seconds", ""))
        elif errors:
            emit(kind="grade failed", exercise=exercise, ename=str(errors[0].get("ename", ""))[:100],
                 evalue=str(errors[0].get("evalue", ""))[:300])
        else:
            emit(kind="grade failed", exercise=exercise, ename="", evalue=why)

    # the kernel is the sandboxed command; interrupts go as messages, since a signal to the sandbox's first
    # process would not reach the kernel inside it
    kernels = Path(spec["kernelspec"])
    (kernels / "lora-lab-sandbox").mkdir(parents=True)
    (kernels / "lora-lab-sandbox" / "kernel.json").write_text(json.dumps(
        {"argv": spec["kernel_argv"], "display_name": "lora-lab sandbox", "language": "python",
         "interrupt_mode": "message"}))
    folder = Path(spec["kernel_folder"])  # inside the sandbox's private folder: the kernel binds its sockets here
    km = AsyncKernelManager(kernel_name="lora-lab-sandbox",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]),
                            transport="ipc", ip=str(folder / "ipc"), connection_file=str(folder / "kernel.json"))
    current = [None]
    client = NotebookClient(nb, km=km, timeout=spec["cell_timeout_s"], interrupt_on_timeout=True,
                            allow_errors=True, record_timing=False, shutdown_kernel="immediate",
                            on_cell_executed=executed, startup_timeout=120,
                            on_cell_start=lambda cell, cell_index: current.__setitem__(0, cell_index),
                            resources={"metadata": {"path": spec["home"]}})
    start = time.perf_counter()
    try:
        client.execute(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except DeadKernelError as e:
        emit(kind="dead", cell=current[0], grading=current[0] is not None and current[0] >= n_student,
             detail=str(e)[:300])
    except Exception as e:  # noqa: BLE001 - anything else that stops the run is reported, not raised
        emit(kind="failed", detail=f"{type(e).__name__}: {e}"[:300])
    emit(kind="done", seconds=round(time.perf_counter() - start, 1))


def _die_with(parent: int) -> None:
    """SIGKILL this process when the grader that started it dies (prctl PR_SET_PDEATHSIG): the sandbox, which dies
    with this process, never outlives a grader killed outright."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the grader died before the line above
        os._exit(1)


def main() -> None:
    _die_with(int(sys.argv[2]))
    # this process's standard output is the channel to the grader: keep it for the events only
    events = os.fdopen(os.dup(1), "w", encoding="utf-8")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    run(Path(sys.argv[1]), events)


if __name__ == "__main__":
    main()
