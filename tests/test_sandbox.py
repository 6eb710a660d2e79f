"""The sandbox a submission runs in (lora_lab/classroom/sandbox.py), tested with small programs, no kernel: what it
shows and hides, the network it cuts, the limits it puts on the whole process tree, and that nothing outlives
it. And the tamper checks the grading cells run (lora_lab/classroom/inkernel.py), in this process."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from sandbox_checks import Listener, need_sandbox, processes

from lora_lab.classroom import inkernel, sandbox

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(params=["as detected"])
def box(request, tmp_path):
    isolation = need_sandbox()
    if request.param == "rlimits only":  # what a machine without a writable cgroup gets
        isolation = dataclasses.replace(isolation, limits="rlimits", systemd_run=(), nproc_limited=os.geteuid() != 0)
    (tmp_path / "kit" / "lora_lab").mkdir(parents=True)
    (tmp_path / "kit" / "lora_lab" / "kit_file.py").write_text("KIT = 1\n")
    with sandbox.Sandbox(isolation, tmp_path / "s1", tmp_path / "kit", memory_gib=0.5, processes=48,
                         name=f"lora-lab-test-{uuid.uuid4().hex[:8]}") as made:
        yield made


def _inside(box, code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(box.wrap([sys.executable, "-c", textwrap.dedent(code)]), capture_output=True, text=True,
                          timeout=timeout)


def test_a_sandbox_shows_the_kit_and_python_read_only_and_nothing_else_of_the_machine(box, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("instructor's")
    listener = Listener()
    try:
        done = _inside(box, f"""
            import json, os, socket, sys
            def can(fn):
                try:
                    fn()
                    return True
                except OSError:
                    return False
            def write(path):
                with open(path, "w") as f:
                    f.write("x")
            def connect():
                socket.create_connection(("127.0.0.1", {listener.port}), timeout=2).sendall(b"out")
            print(json.dumps({{
                "uid": os.getuid(), "home": os.environ["HOME"], "cwd": os.getcwd(), "env": sorted(os.environ),
                "secret": os.path.exists({str(secret)!r}), "clone": os.path.exists({str(ROOT / "notebooks")!r}),
                "kit": os.listdir("{box.kit}/lora_lab"), "write kit": can(lambda: write("{box.kit}/lora_lab/x.py")),
                "write python": can(lambda: write(sys.prefix + "/x")), "write home": can(lambda: write("mine.txt")),
                "tmp": os.listdir("/tmp"), "network": can(connect)}}))
        """)
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["uid"] == sandbox.UID and seen["home"] == seen["cwd"] == str(box.home)
    assert not seen["secret"] and not seen["clone"], seen
    assert seen["kit"] == ["kit_file.py"] and not seen["write kit"] and not seen["write python"], seen
    assert seen["write home"] and (box.home / "mine.txt").read_text() == "x"
    # a private /tmp: nothing in it but the mount points of what the sandbox binds (its own folder, and the Python
    # environment where that lives under /tmp, as in a clone made there)
    mounted = {Path(p).parts[2] for p in (box.folder, *sandbox.python_prefixes())
               if len(Path(p).parts) > 2 and Path(p).parts[1] == "tmp"}
    assert set(seen["tmp"]) <= mounted, seen["tmp"]
    assert not seen["network"] and listener.received == []
    assert set(seen["env"]) - {"PWD"} == set(box.env()), "the grader's environment leaked in"


@pytest.mark.parametrize("box", ["as detected", "rlimits only"], indirect=True)
def test_nothing_outlives_the_sandbox_when_its_parent_is_killed(box, tmp_path):
    """The production path: a worker starts the sandbox and is killed at the time limit; a detached daemon that
    ignores SIGTERM, and a process stuck in a long call, go with it."""
    marker = f"lora-lab-daemon-{uuid.uuid4().hex}"
    daemon = textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if os.fork() == 0:
            os.setsid()
            subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "{marker}"], start_new_session=True)
            open("started", "w").close()
            time.sleep(600)
        time.sleep(600)
    """)
    worker = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
                               *box.wrap([sys.executable, "-c", daemon, marker])], start_new_session=True)
    deadline = time.time() + 60
    while not (box.home / "started").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert (box.home / "started").exists(), "the daemon did not start"
    assert len(processes(marker)) >= 4  # the daemon, its child, the sleeper and the first process
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    deadline = time.time() + 10
    while processes(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert processes(marker) == [], "a process of the sandbox outlived it"


def test_memory_and_processes_are_limited_for_the_whole_tree(box):
    if box.isolation.limits == "rlimits":
        pytest.skip("no cgroup here: memory is limited per process (address space), as the grader says at start")
    done = _inside(box, """
        import subprocess, sys
        hog = "import time; b = bytearray(b'1') * (200 * 2**20); time.sleep(3)"
        children = [subprocess.Popen([sys.executable, "-c", hog]) for _ in range(3)]
        codes = [c.wait() for c in children]
        crowd = []
        try:
            for _ in range(100):
                crowd.append(subprocess.Popen(["sleep", "30"]))
        except OSError:
            pass
        for p in crowd:
            p.kill()
        print(codes, len(crowd))
    """)
    assert done.returncode == 0, done.stderr
    codes, crowd = done.stdout.rsplit("]", 1)
    assert "-9" in codes, f"three children of 200 MiB each all lived under a 0.5 GiB limit: {codes}]"
    assert int(crowd) < box.processes, crowd


@pytest.mark.parametrize("box", ["as detected", "rlimits only"], indirect=True)
def test_the_address_space_limit_applies_inside_every_process(box):
    done = _inside(box, """
        try:
            b = bytearray(2**30)
            print("allocated")
        except MemoryError:
            print("MemoryError")
    """)
    assert done.stdout.strip() == "MemoryError", (done.stdout, done.stderr)


def test_without_bubblewrap_the_grader_names_the_risk(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.raises(sandbox.SandboxUnavailable, match="--unsafe-no-sandbox only if you trust every submission"):
        sandbox.detect()
    unsafe = sandbox.detect(unsafe=True)
    assert unsafe.bwrap is None and "NO SANDBOX" in unsafe.describe(6, 256)
    assert "read and change anything your account can" in unsafe.describe(6, 256)


# ----------------------------------------------------------------------------- the grading cell's tamper checks

def _notebook_code(tmp_path: Path, source: str) -> dict:
    """Functions and classes compiled as a notebook's would be: from a file outside the trusted folders."""
    space = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(source), str(tmp_path / "cell.py"), "exec"), space)
    return space


def test_tamper_checks_name_what_the_notebook_replaced(tmp_path, monkeypatch):
    import json as json_module

    import torch

    import lora_lab.tasks

    trust = inkernel._Trust([sys.prefix, sys.base_prefix, str(ROOT / "lora_lab")])
    before = set(inkernel.tampering(trust))  # this process runs other tests' code too: only what is new counts
    cell = _notebook_code(tmp_path, """
        import threading, time
        def dumps(obj, *a, **k):
            return "forged"
        def allclose(*a, **k):
            return True
        class Hook:
            def find_spec(self, name, path=None, target=None):
                return None
        def spin(stop):
            while not stop.is_set():
                time.sleep(0.01)
    """)
    monkeypatch.setattr(json_module, "dumps", cell["dumps"])
    monkeypatch.setattr(torch.Tensor, "allclose", cell["allclose"])
    monkeypatch.setattr(lora_lab.tasks, "format_llama2", cell["dumps"])
    monkeypatch.setattr(sys, "meta_path", [cell["Hook"](), *sys.meta_path])
    stop = threading.Event()
    thread = threading.Thread(target=cell["spin"], args=(stop,))
    thread.start()
    try:
        found = [f for f in inkernel.tampering(trust) if f not in before]
    finally:
        stop.set()
        thread.join()
    assert "json.dumps replaced" in found and "torch.Tensor.allclose replaced" in found, found
    assert "an import hook in sys.meta_path (Hook)" in found, found
    assert "a thread still running the notebook's spin()" in found, found
    assert "lora_lab.tasks.format_llama2" in inkernel.kit_replaced(trust)


def test_what_torch_compiles_in_the_sandbox_is_trusted_and_nothing_else_written_there(tmp_path):
    """bitsandbytes 0.50 dequantizes an odd last dimension on a CPU with a torch.compile'd function (notebook 04
    does); Inductor loads the module it generates from its cache folder, which the notebook can write to. That
    module passes the tamper checks; one the notebook writes there and imports itself does not, nor does a
    function of a generated module put in place of a library's."""
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "inkernel.py").write_bytes((ROOT / "lora_lab" / "classroom" / "inkernel.py").read_bytes())
    with sandbox.Sandbox(need_sandbox(), tmp_path / "s", tmp_path / "kit", memory_gib=6,
                         name=f"lora-lab-test-{uuid.uuid4().hex[:8]}") as box:
        done = _inside(box, f"""
            import importlib.util, json, os, sys
            import bitsandbytes.functional as F
            import torch
            from torch._inductor.codecache import PyCodeCache
            spec = importlib.util.spec_from_file_location("grading", {box.kit!r} + "/inkernel.py")
            grading = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(grading)
            trust = grading._Trust({box.trusted()!r}, {str(box.inductor)!r})
            q, state = F.quantize_4bit(torch.randn(4, 63), blocksize=64, quant_type="nf4", compress_statistics=True)
            F.dequantize_4bit(q, state)  # odd last dimension: the compiled fallback
            made = [n for n in sys.modules if n.startswith(grading.GENERATED_BY + ".")]
            report = {{"made": made, "files": [sys.modules[n].__file__ for n in made], "honest": grading.tampering(trust),
                       "unnamed": grading.tampering(grading._Trust({box.trusted()!r}))}}
            key = "cforged" + "x" * 45
            path = os.path.join({str(box.inductor)!r}, key[1:3], key + ".py")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write("def allclose(*a, **k):\\n    return True\\n")
            own = importlib.util.spec_from_file_location(grading.GENERATED_BY + "." + key, path)
            sys.modules[own.name] = forged = importlib.util.module_from_spec(own)
            own.loader.exec_module(forged)
            report["imported"] = grading.tampering(trust)
            del sys.modules[own.name]
            loaded = PyCodeCache.load_by_key_path(key, path)  # torch's own loader: trusted in that module only
            dumps, json.dumps = json.dumps, loaded.allclose
            report["loaded"] = grading.tampering(trust)
            print(dumps(report))
        """, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["made"] and all(f.startswith(str(box.inductor) + "/") for f in report["files"]), report
    assert report["honest"] == [], report["honest"]
    assert any("loaded from " + str(box.inductor) in f for f in report["unnamed"]), report["unnamed"]
    assert any(f.endswith("cforged" + "x" * 45 + ".py") and "loaded from" in f for f in report["imported"]), report
    assert report["loaded"] == ["json.dumps replaced"], report["loaded"]


def test_a_notebook_over_its_time_limit_ends_with_everything_it_started():
    """A kernel that ignores interrupts, in a call that never returns, with a detached child: at the notebook's
    time limit the grader ends it all at once (the issue: such a kernel ran on ~50 s past its limit)."""
    import nbformat

    from lora_lab.classroom.grade import Limits
    from lora_lab.classroom.runner import GradingRun

    isolation = need_sandbox()
    marker = f"lora-lab-stuck-{uuid.uuid4().hex}"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import signal, subprocess, sys, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{marker}'], start_new_session=True)\n"
        "time.sleep(600)\n")])
    seen, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            seen.extend(processes(marker))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    run = GradingRun(isolation)
    try:
        _, timed_out, seconds = run.run(nbformat.writes(nb), [{"id": "00.1", "answer": "compute_dtype_for"}],
                                        Limits(timeout_s=10, cell_timeout_s=60, memory_gib=2))
    finally:
        stop.set()
        watcher.join()
        run.close()
    assert seen, "the detached child never started"
    assert timed_out and seconds < 15, seconds
    assert processes(marker) == [] and not run.scratch.exists()
