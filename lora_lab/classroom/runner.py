"""Run submissions in their sandboxes for one grading run: the kit copy they share, one worker each, time limits.

A `GradingRun` copies the kit and its data once into a scratch folder outside any working tree (shown
read-only in every sandbox), and checks after every submission that the copy is still what it copied. Each
submission gets a new `sandbox.Sandbox` and a worker process (`worker.py`) outside it; the worker's events
come back over its standard output. At the notebook's time limit the worker is killed, which ends the
sandbox (bubblewrap dies with its parent, and its PID namespace with it), and the cgroup, where there is one,
is swept; nothing of the run is left behind but what the grader writes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import limits, sandbox


class KitChanged(OSError):
    """The kit copy every submission is graded with changed during the run: the grades after it cannot be trusted."""


class GradingRun:
    """Scratch space, the kit copy and the isolation shared by every submission of one `grade` call."""

    def __init__(self, isolation: sandbox.Isolation):
        self.isolation = isolation
        if isolation.limits == "cgroup v1":
            limits.sweep_stale()
        self.scratch = Path(tempfile.mkdtemp(prefix="lora-lab-grade-"))
        self.kit = self.scratch / "kit"
        self.hashes = self._copy_kit()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._active: dict[int, tuple[subprocess.Popen, sandbox.Sandbox]] = {}
        self._stopping = False

    def _copy_kit(self) -> dict[str, str]:
        from .. import paths

        package = Path(paths.__file__).resolve().parent
        shutil.copytree(package, self.kit / "lora_lab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        if not paths.DATA_DIR.is_relative_to(package):
            shutil.copytree(paths.DATA_DIR, self.kit / "data")
        return self._digest()

    def _digest(self) -> dict[str, str]:
        return {p.relative_to(self.kit).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.kit.rglob("*")) if p.is_file()}

    def check_kit(self) -> None:
        """KitChanged, naming the files, if the kit copy differs from what was copied."""
        now = self._digest()
        changed = sorted(k for k in set(now) | set(self.hashes) if now.get(k) != self.hashes.get(k))
        if changed:
            raise KitChanged(f"the kit copy the submissions are graded with changed: {', '.join(changed[:5])}")

    def run(self, notebook_text: str, exercises: list[dict], limits) -> tuple[list[dict], bool, float]:
        """Run one notebook (its JSON text) in a new sandbox; (the worker's events, whether the notebook time limit
        stopped it, seconds). exercises: [{"id": "00.1", "answer": "compute_dtype_for"}, ...]."""
        k = next(self._ids)
        own = self.scratch / f"w{k}"  # the worker's, outside the sandbox: spec, notebook, kernel spec, log
        own.mkdir()
        box = sandbox.Sandbox(self.isolation, self.scratch / f"s{k}", self.kit, limits.memory_gib, limits.processes,
                              name=f"lora-lab-{os.getpid()}-{k}-{secrets.token_hex(3)}")
        events: list[dict] = []
        try:
            (box.home / "submission.ipynb").write_text(notebook_text, encoding="utf-8")  # the student's own copy
            (own / "submission.ipynb").write_text(notebook_text, encoding="utf-8")      # the one the worker runs
            kernel_folder = box.folder / "kernel"
            kernel_folder.mkdir()
            python = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
            spec = {"notebook": str(own / "submission.ipynb"), "exercises": exercises, "language": limits.language,
                    "cell_timeout_s": limits.cell_timeout_s, "kernel_argv": box.wrap(python),
                    "kernelspec": str(own / "kernels"), "kernel_folder": str(kernel_folder), "home": str(box.home),
                    "trusted": box.trusted(), "inductor": str(box.inductor),
                    "grading_module": f"{box.kit}/lora_lab/classroom/inkernel.py"}
            (own / "spec.json").write_text(json.dumps(spec))
            here = str(Path(__file__).resolve().parents[2])  # where this grader's own lora_lab is imported from
            env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
            env.update(PYTHONPATH=here, HOME=str(own), JUPYTER_RUNTIME_DIR=str(own / "runtime"),
                       JUPYTER_DATA_DIR=str(own / "data"), JUPYTER_CONFIG_DIR=str(own / "config"),
                       JUPYTER_PLATFORM_DIRS="1", PYTHONDONTWRITEBYTECODE="1")
            start = time.perf_counter()
            with open(own / "worker.log", "w") as log:
                proc = subprocess.Popen([sys.executable, "-m", "lora_lab.classroom.worker", str(own / "spec.json"),
                                         str(os.getpid())],
                                        cwd=own, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=log, start_new_session=True)
            with self._lock:
                if self._stopping:
                    proc.kill()
                self._active[k] = (proc, box)
            reader = threading.Thread(target=_read_events, args=(proc.stdout, events), daemon=True)
            reader.start()
            try:
                proc.wait(timeout=limits.timeout_s)
                timed_out = False
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _end(proc, box)
                reader.join(timeout=10)
            seconds = round(time.perf_counter() - start, 1)
            if not timed_out and not any(e.get("kind") == "done" for e in events):
                events.append({"kind": "failed", "detail": _worker_failure(proc.returncode, own / "worker.log")})
        finally:
            with self._lock:
                self._active.pop(k, None)
            box.close()
            shutil.rmtree(box.folder, ignore_errors=True)
            shutil.rmtree(own, ignore_errors=True)
        return list(events), timed_out, seconds

    def stop(self) -> None:
        """Kill every submission still running (Ctrl-C): its worker, its sandbox and everything in it."""
        with self._lock:
            self._stopping = True
            active = list(self._active.values())
        for proc, box in active:
            _end(proc, box)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.scratch, ignore_errors=True)


def _worker_failure(returncode: int, log: Path) -> str:
    """Why a worker ended without reporting that it finished: its exit and the last line it wrote to its log
    (the error of an import that failed, for one)."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except OSError:
        lines = []
    how = f"killed by signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
    return f"the grader's worker stopped before it finished ({how})" + (f": {lines[-1][:200]}" if lines else "")


def _read_events(stream, events: list) -> None:
    for line in stream:
        try:
            events.append(json.loads(line))
        except ValueError:
            pass  # only the worker writes here; a torn last line from a kill is dropped
    stream.close()


def _end(proc: subprocess.Popen, box: sandbox.Sandbox) -> None:
    """Kill the worker's process group; the sandbox goes with it (and is swept through its cgroup)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    box.kill()
