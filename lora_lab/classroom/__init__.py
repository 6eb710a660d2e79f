"""For instructors: a student copy without solutions (`release`) and a grader for submitted notebooks (`grade`).

`lora-lab classroom release OUT/` and `lora-lab classroom grade SUBMISSIONS/ --out grades.csv`; the README's
section for instructors walks through release, distribution, collection and grading.
"""
