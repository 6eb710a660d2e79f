"""Memory and process limits for a sandbox's whole process tree, and the small launchers that apply them.

Where this account may write cgroup v1's memory and pids hierarchies (root, as a rule), each sandbox gets a
cgroup of its own under this process's: a memory limit (memory plus swap where swap is accounted) and a
process limit that hold for every process in it, and a sweep that kills whatever is left. On cgroup v2, the
same through `systemd-run --scope` (MemoryMax, MemorySwapMax, TasksMax), used only where a probe shows the
limits applied. Elsewhere `LIMITS` sets rlimits on the kernel's process, which every process it starts
inherits: address space per process, and a process count, which inside a user namespace counts only that
namespace's processes (Linux 5.14 and later), and has no effect for root.

Sources: the kernel's Documentation/admin-guide/cgroup-v1/{memory,pids}.rst, systemd.resource-control(5),
setrlimit(2), prctl(2).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path


class LimitsUnavailable(OSError):
    """The cgroup this run was going to use cannot be made."""


# Inside the sandbox, before the kernel starts: limits every process inherits, then exec the command.
# argv: NPROC AS_BYTES FSIZE_BYTES -- command... ; a limit of 0 is left as it is. The command also gets
# SIGKILL when its parent dies (prctl PR_SET_PDEATHSIG): inside bubblewrap a second guard, without it the only one.
LIMITS = """\
import ctypes, os, resource, signal, sys
n, mem, fsize = (int(v) for v in sys.argv[1:4])
for which, value in ((resource.RLIMIT_NPROC, n), (resource.RLIMIT_AS, mem), (resource.RLIMIT_FSIZE, fsize)):
    if value:
        resource.setrlimit(which, (value, value))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
try:
    ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))
except (OSError, AttributeError):
    pass
os.execv(sys.argv[5], sys.argv[5:])
"""

# Outside, as the sandbox starts: join the cgroups named before "--" (their cgroup.procs files), then exec.
JOIN = """\
import os, sys
cut = sys.argv.index("--")
for procs in sys.argv[1:cut]:
    with open(procs, "w") as f:
        f.write(str(os.getpid()))
os.execvp(sys.argv[cut + 1], sys.argv[cut + 1:])
"""


def mounts(fstype: str) -> list[tuple[str, set[str]]]:
    """(mount point, options) of every mount of fstype, from /proc/self/mountinfo."""
    out = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) > 4 and len(rest) > 2 and rest[0] == fstype:
            out.append((fields[4], set(rest[2].split(","))))
    return out


def cgroup_v1_dirs() -> dict[str, Path] | None:
    """{"memory": dir, "pids": dir}: this process's own cgroup v1 folders, if both exist and are writable."""
    own = {}
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            for c in controllers.split(","):
                own[c] = path
    except (OSError, ValueError):
        return None
    found = {}
    for point, options in mounts("cgroup"):
        for c in ("memory", "pids"):
            if c in options and c in own:
                d = Path(point) / own[c].lstrip("/")
                if d.is_dir() and os.access(d, os.W_OK):
                    found[c] = d
    return found if set(found) == {"memory", "pids"} else None


def systemd_run_scope() -> tuple[str, ...]:
    """The `systemd-run --scope` prefix if it really applies memory and task limits here (probed), else ()."""
    run = shutil.which("systemd-run")
    if run is None or not mounts("cgroup2"):
        return ()
    prefix = (run, *(() if os.geteuid() == 0 else ("--user",)), "--scope", "--quiet", "--collect")
    probe = 'p=$(sed -n "s/^0:://p" /proc/self/cgroup); cat "/sys/fs/cgroup$p/memory.max" "/sys/fs/cgroup$p/pids.max"'
    try:
        done = subprocess.run([*prefix, "-p", "MemoryMax=64M", "-p", "TasksMax=16", "--", "sh", "-c", probe],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return prefix if done.returncode == 0 and done.stdout.split() == [str(64 * 2**20), "16"] else ()


class CgroupV1:
    """One sandbox's memory and pids cgroups (v1), under this process's own."""

    def __init__(self, name: str, memory_bytes: int, processes: int):
        dirs = cgroup_v1_dirs()
        if dirs is None:
            raise LimitsUnavailable("the cgroup v1 memory and pids folders are no longer writable")
        self.dirs = [dirs["memory"] / name, dirs["pids"] / name]
        for d in self.dirs:
            d.mkdir()
        (self.dirs[0] / "memory.limit_in_bytes").write_text(str(memory_bytes))
        try:  # memory plus swap, where swap accounting is on: no escape into swap
            (self.dirs[0] / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
        except OSError:
            pass
        (self.dirs[1] / "pids.max").write_text(str(processes))

    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found = set()
        for d in self.dirs:
            try:
                found |= {int(p) for p in (d / "cgroup.procs").read_text().split()}
            except OSError:
                pass
        return found

    def kill(self) -> None:
        """SIGKILL every process in the cgroups until none is left (a fork during the sweep is caught next round)."""
        for _ in range(200):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def remove(self) -> None:
        for d in self.dirs:
            for _ in range(100):  # a killed process leaves its cgroup a moment after it dies
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)


def sweep_stale() -> None:
    """Remove the empty cgroups of grading runs whose grader is gone (killed outright, it could not clean up)."""
    dirs = cgroup_v1_dirs()
    for parent in (dirs or {}).values():
        for d in parent.glob("lora-lab-*-*"):
            pid = d.name.split("-")[2]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                try:
                    d.rmdir()  # fails, and is left, while a process is still in it
                except OSError:
                    pass
