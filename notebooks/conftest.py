"""Each notebook's run time under nbval, printed after every `make test`, against the kit's promise.

The promise: a notebook runs top to bottom in under 90 seconds (NOTEBOOK_BUDGET_S) on a quiet 2-core
laptop CPU. Under `make test` a notebook gets one thread and shares the cores with another test worker,
so it runs up to about twice as long as it would alone: the table flags notebooks over the promise, and a
notebook over twice the promise fails the run, which keeps slow cells from creeping in.
"""

import os
from collections import defaultdict
from pathlib import Path

NOTEBOOK_BUDGET_S = float(os.environ.get("LORA_LAB_NOTEBOOK_BUDGET_S", 90))
FAIL_AFTER_S = 2 * NOTEBOOK_BUDGET_S  # one core of two, shared: at most twice the time alone
_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _seconds[path] += report.duration  # setup (kernel start), call and teardown of every cell


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    tr = terminalreporter
    cap = os.environ.get("ATEN_CPU_CAPABILITY", "this machine's own")
    tr.section(f"notebook run times (torch CPU kernels: {cap}; promise {NOTEBOOK_BUDGET_S:.0f} s alone, "
               f"fails over {FAIL_AFTER_S:.0f} s here)")
    for path, s in sorted(_seconds.items()):
        flag = "  FAILS: over the limit" if s > FAIL_AFTER_S else "  over the promise" if s > NOTEBOOK_BUDGET_S else ""
        tr.write_line(f"{s:7.1f} s  {Path(path).as_posix()}{flag}")


def pytest_sessionfinish(session, exitstatus):
    if exitstatus == 0 and any(s > FAIL_AFTER_S for s in _seconds.values()):
        session.exitstatus = 1  # every cell passed, but a notebook broke its time promise
