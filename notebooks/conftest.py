"""Each notebook's run time under nbval, printed after every `make test`, against the kit's promise.

The promise is that a notebook runs top to bottom in under two minutes on a 2-core laptop CPU. Under
`make test` the notebooks share the cores with other test workers (one thread each), so the table is an
upper bound; a notebook over NOTEBOOK_BUDGET_S fails the run, which keeps slow cells from creeping in.
"""

import os
from collections import defaultdict
from pathlib import Path

NOTEBOOK_BUDGET_S = float(os.environ.get("LORA_LAB_NOTEBOOK_BUDGET_S", 120))
_seconds: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _seconds[path] += report.duration  # setup (kernel start), call and teardown of every cell


def _over_budget() -> dict[str, float]:
    return {path: s for path, s in _seconds.items() if s > NOTEBOOK_BUDGET_S}


def pytest_terminal_summary(terminalreporter):
    if not _seconds:
        return
    tr = terminalreporter
    cap = os.environ.get("ATEN_CPU_CAPABILITY", "this machine's own")
    tr.section(f"notebook run times (torch CPU kernels: {cap}; budget {NOTEBOOK_BUDGET_S:.0f} s each)")
    for path, s in sorted(_seconds.items()):
        flag = "  OVER BUDGET" if s > NOTEBOOK_BUDGET_S else ""
        tr.write_line(f"{s:7.1f} s  {Path(path).as_posix()}{flag}")


def pytest_sessionfinish(session, exitstatus):
    if _over_budget() and exitstatus == 0:
        session.exitstatus = 1  # every cell passed, but a notebook broke its time promise
