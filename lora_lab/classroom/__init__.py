"""For instructors: a student copy without solutions (`release`) and a grader for submitted notebooks (`grade`).

`lora-lab classroom release [OUT/]` and `lora-lab classroom grade SUBMISSIONS/ [--out grades.csv] [-j N]`. Each
submission is graded in its own sandbox (`sandbox.py`, `limits.py`), run by a worker outside it (`runner.py`,
`worker.py`) that reads the verdicts the grading cells show (`inkernel.py`); `report.py` writes what the
instructor reads. The README's section for instructors walks through release, distribution, collection and
grading, and says what the sandbox and the grading cells stop and what they cannot.
"""
