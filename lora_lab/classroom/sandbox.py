"""A sandbox per submission: the one place in the grader that knows how a student's code is isolated.

Bubblewrap (`bwrap`, the sandbox Flatpak uses) starts each kernel with:
- the kit and the Python environment mounted read-only, and nothing else of the file system but /usr and
  the libraries (so no home folder, no clone with its solutions, no other submission, no grades file);
- a private writable folder that holds only that submission's copy, its HOME and its kernel's sockets;
- a private /tmp (a tmpfs), no network (its own network namespace), its own PID namespace: when the
  kernel's sandbox ends, the kernel kills every process left in it, whatever it forked or detached;
- no capabilities, a fresh session (no terminal to inject keys into), and a clean environment.

Memory and the number of processes are limited for the whole sandbox where cgroups can be used, otherwise by
rlimits on every process (`limits.py` says how). Every process also gets a file-size limit and no core dumps.
`detect()` says which of these is in force; without bubblewrap the grader refuses to run unless told to run
unsafely, and then says what that risks.

Linux only. Follows bubblewrap's own documentation (github.com/containers/bubblewrap, bwrap(1)).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import limits

KIT = "/opt/lora-lab"  # where the kit appears inside the sandbox (lora_lab/ and data/ under it)
UID = 1000             # the student's user id inside the sandbox
UNSAFE_RISK = ("each submission then runs as you, with no sandbox: its code can read and change anything your "
               "account can (other students' notebooks, the grades file, the kit that grades the next "
               "submissions, your own files), reach the network, and leave processes running")

class SandboxUnavailable(OSError):
    """No sandbox can be made on this system; the message says why and what to do."""


@dataclass(frozen=True)
class Isolation:
    """What isolates a submission here. sandbox: "bubblewrap 0.8.0" or "none"; limits: how memory and
    processes are held ("cgroup v1", "cgroup v2 (systemd-run)", "rlimits"); nproc_limited: False where
    nothing can cap the process count (rlimits as root)."""

    sandbox: str
    limits: str
    bwrap: str | None = None
    options: tuple[str, ...] = ()
    systemd_run: tuple[str, ...] = ()
    nproc_limited: bool = True

    def describe(self, memory_gib: float, processes: int) -> str:
        """One sentence for the start of a grading run."""
        if self.bwrap is None:
            where = "NO SANDBOX (--unsafe-no-sandbox): " + UNSAFE_RISK
        else:
            where = (f"{self.sandbox}: kit and Python read-only, a private folder and /tmp, no network, its own "
                     f"PID namespace")
        if self.limits == "rlimits":
            count = (f", at most {processes} processes (a user-namespace count)" if self.nproc_limited and self.bwrap
                     else ", the number of processes is not limited (rlimits cannot cap it for root)"
                     if self.bwrap else "")
            held = f"{memory_gib:g} GiB address space per process{count} (rlimits; no cgroup writable here)"
        else:
            held = f"{memory_gib:g} GiB and {processes} processes for the whole sandbox ({self.limits})"
        return f"each submission: {where}; {held}"


def _bwrap_base(options: tuple[str, ...] = ()) -> list[str]:
    """The flags every sandbox gets; options: those of the newer ones this bwrap has ("--disable-userns")."""
    return ["--unshare-all", "--unshare-user", *[o for o in options if o == "--disable-userns"], "--die-with-parent",
            "--new-session", "--cap-drop", "ALL", "--uid", str(UID), "--gid", str(UID)]


def _bwrap_options(bwrap: str) -> tuple[str, ...]:
    """Which of the flags added after bubblewrap 0.6 this one knows (Ubuntu 22.04 has 0.6.1)."""
    text = subprocess.run([bwrap, "--help"], capture_output=True, text=True).stdout
    return tuple(o for o in ("--disable-userns", "--size") if o + " " in text)


def _system_mounts() -> list[str]:
    """/usr read-only, and /bin, /lib… as the host has them (symlinks into /usr on merged systems)."""
    args = ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/nsswitch.conf"):
        args += ["--ro-bind-try", f, f]
    return args


def _prefixes() -> list[str]:
    """The folders the running Python needs (its environment and base interpreter, as named and as resolved),
    outermost only."""
    found = set()
    for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(sys.executable),
              os.path.dirname(os.path.realpath(sys.executable))):
        found |= {os.path.abspath(p), os.path.realpath(p)}
    found = sorted(found, key=len)
    return [p for i, p in enumerate(found) if not any(p.startswith(q + "/") for q in found[:i])]


def python_prefixes() -> list[str]:
    """What of the running Python the sandbox mounts (read-only): `_prefixes()` outside /usr, which is mounted
    anyway. SandboxUnavailable if one of them is / or holds the home folder (the students would see all of it)."""
    outer = _prefixes()
    home = os.path.realpath(os.path.expanduser("~"))
    for p in outer:
        if p == "/" or home == p or home.startswith(p + "/"):
            raise SandboxUnavailable(f"the Python environment lives at {p}; mounting it in the sandbox would show "
                                     "the submissions all of it: grade from a virtual environment (make venv)")
    return [p for p in outer if p != "/usr" and not p.startswith("/usr/")]


def _probe_bwrap(bwrap: str, options: tuple[str, ...]) -> str | None:
    """None if bubblewrap can make a sandbox here, else why not (its own message)."""
    cmd = [bwrap, *_bwrap_base(options), *_system_mounts(), "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
           "--", "/usr/bin/env", "true"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return str(e)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit status {done.returncode}")


def detect(unsafe: bool = False) -> Isolation:
    """The isolation this system allows. SandboxUnavailable (saying why and what to install) when bubblewrap is
    missing or cannot run, unless unsafe, which gives Isolation("none", ...) for `--unsafe-no-sandbox`."""
    if sys.platform != "linux":
        why = f"the sandbox needs Linux (this is {sys.platform})"
        bwrap = None
    else:
        bwrap = shutil.which("bwrap")
        why = ("bubblewrap (bwrap) is not installed: `sudo apt-get install bubblewrap` (Debian, Ubuntu), "
               "`sudo dnf install bubblewrap` (Fedora)") if bwrap is None else None
        options = _bwrap_options(bwrap) if bwrap else ()
        if bwrap is not None:
            failed = _probe_bwrap(bwrap, options)
            if failed:
                why, bwrap = f"bubblewrap cannot make a sandbox here: {failed}", None
        if bwrap is not None:
            try:
                python_prefixes()
            except SandboxUnavailable as e:
                why, bwrap = str(e), None
    if bwrap is None and not unsafe:
        raise SandboxUnavailable(f"no sandbox for the submissions: {why}. Without one, pass --unsafe-no-sandbox "
                                 f"only if you trust every submission: {UNSAFE_RISK}")
    version = "bubblewrap"
    if bwrap is not None:
        out = subprocess.run([bwrap, "--version"], capture_output=True, text=True).stdout.split()
        version = " ".join(out[:2]) if out else version
    sandbox = version if bwrap else "none"
    options = options if bwrap else ()
    if sys.platform == "linux" and limits.cgroup_v1_dirs():
        return Isolation(sandbox, "cgroup v1", bwrap, options)
    scope = limits.systemd_run_scope() if sys.platform == "linux" else ()
    if scope:
        return Isolation(sandbox, "cgroup v2 (systemd-run)", bwrap, options, scope)
    return Isolation(sandbox, "rlimits", bwrap, options, nproc_limited=bwrap is not None and os.geteuid() != 0)


class Sandbox:
    """One submission's sandbox: `folder` is its private writable folder (created, with home/ in it; torch.compile's
    cache goes to `inductor` in it, a folder the grading cells know), `kit` the
    folder holding the kit copy (lora_lab/ and data/), shown read-only at KIT. `wrap(argv)` is the command that
    runs argv inside, with `env()` as its whole environment; `close()` kills whatever is left and removes the
    cgroups. Use as a context manager; `name` names its cgroups (unique per grading run and submission).

    With Isolation("none", ...) (`--unsafe-no-sandbox`) nothing is hidden: the command runs as the grader's
    user, the kit at its own path; the environment, rlimits and cgroups are applied all the same.
    """

    def __init__(self, isolation: Isolation, folder: Path, kit: Path, memory_gib: float, processes: int = 256,
                 file_gib: float = 2.0, name: str = "lora-lab-sandbox"):
        self.isolation, self.folder, self.host_kit = isolation, Path(folder), Path(kit)
        self.memory, self.processes = int(memory_gib * 2**30), int(processes)
        self.file_size = int(file_gib * 2**30)
        self.kit = KIT if isolation.bwrap else str(self.host_kit)
        self.home = self.folder / "home"
        self.inductor = self.folder / "torchinductor"  # where torch.compile writes the modules it generates
        self.folder.mkdir(parents=True)
        self.home.mkdir()
        passwd = self.folder.parent / f"{self.folder.name}.passwd"
        passwd.write_text(f"student:x:{UID}:{UID}:student:{self.home}:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
        group = self.folder.parent / f"{self.folder.name}.group"
        group.write_text(f"student:x:{UID}:\nnobody:x:65534:\n")
        self._etc = (passwd, group)
        self._cgroup = limits.CgroupV1(name, self.memory, self.processes) if isolation.limits == "cgroup v1" else None

    def trusted(self) -> list[str]:
        """Folders whose code the submission cannot change: the kit and the Python environment."""
        return [self.kit, *_prefixes(), "/usr"]

    def env(self) -> dict[str, str]:
        """The environment inside: nothing of the grader's but locale, time zone and torch's CPU kernel choice."""
        keep = {k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TZ", "ATEN_CPU_CAPABILITY")}
        home = str(self.home)
        return {**keep, "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin", "HOME": home,
                "USER": "student", "LOGNAME": "student", "TMPDIR": "/tmp" if self.isolation.bwrap else home,
                "PYTHONPATH": self.kit, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1",
                "HF_HOME": f"{home}/.hf", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg", "MPLCONFIGDIR": f"{home}/.matplotlib",
                "IPYTHONDIR": f"{home}/.ipython", "JUPYTER_RUNTIME_DIR": f"{home}/.jupyter-runtime",
                "JUPYTER_CONFIG_DIR": f"{home}/.jupyter", "OMP_NUM_THREADS": "1",
                "TORCHINDUCTOR_CACHE_DIR": str(self.inductor)}

    def wrap(self, argv: list[str]) -> list[str]:
        """The command that runs argv in this sandbox, the limits applied to every process it starts."""
        nproc = self.processes if self.isolation.limits == "rlimits" and self.isolation.nproc_limited else 0
        limited = [sys.executable, "-I", "-S", "-c", limits.LIMITS, str(nproc), str(self.memory), str(self.file_size),
                   "--", *argv]
        if self.isolation.bwrap:
            mounts = []
            for p in python_prefixes():
                mounts += ["--ro-bind", p, p]
            for k, v in self.env().items():
                mounts += ["--setenv", k, v]
            size = ["--size", str(self.memory)] if "--size" in self.isolation.options else []
            cmd = [self.isolation.bwrap, *_bwrap_base(self.isolation.options), *_system_mounts(),
                   "--ro-bind", str(self._etc[0]), "/etc/passwd", "--ro-bind", str(self._etc[1]), "/etc/group",
                   "--ro-bind", str(self.host_kit), KIT, "--proc", "/proc", "--dev", "/dev", *size, "--tmpfs", "/tmp",
                   "--bind", str(self.folder), str(self.folder), "--chdir", str(self.home), "--clearenv", *mounts,
                   "--", *limited]
        else:
            cmd = ["/usr/bin/env", "-i", *[f"{k}={v}" for k, v in self.env().items()], *limited]
        if self._cgroup is not None:
            cmd = [sys.executable, "-I", "-S", "-c", limits.JOIN, *self._cgroup.procs_files(), "--", *cmd]
        elif self.isolation.systemd_run:
            cmd = [*self.isolation.systemd_run, "-p", f"MemoryMax={self.memory}", "-p", "MemorySwapMax=0",
                   "-p", f"TasksMax={self.processes}", "--", *cmd]
        return cmd

    def pids(self) -> set[int]:
        """The processes still in the sandbox's cgroup (empty where there is none to ask)."""
        return self._cgroup.pids() if self._cgroup is not None else set()

    def kill(self) -> None:
        """Kill every process of the sandbox that is still running (through its cgroup, where there is one; the
        PID namespace does the same when the sandbox's first process ends)."""
        if self._cgroup is not None:
            self._cgroup.kill()

    def close(self) -> None:
        self.kill()
        if self._cgroup is not None:
            self._cgroup.remove()
        for f in self._etc:
            f.unlink(missing_ok=True)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
