"""The Colab stand-in: a venv with Colab's published package versions, the kit installed by the notebooks' own first cell.

Most learners meet the kit in Colab: the first cell of every notebook runs `pip install` on a clone of the
kit, over Colab's preinstalled libraries, and every later cell runs against that installed copy. This script
rebuilds that situation on a CPU machine, for the second pass of `make test`:

    python tests/colab_standin.py image VENV [MAIN_VENV]  # Colab's versions of what the kit needs (torch from
                                                          # MAIN_VENV by hard links where it can)
    python tests/colab_standin.py install VENV    # the first cell, run as in Colab; what it changed is recorded
    python tests/colab_standin.py workdir DIR     # the notebooks and the stand-in's tests, copied outside the clone

What it cannot be: Colab runs Python 3.13 with torch 2.11.0+cu128 on a GPU, and its own widget frontend.
Here the Python is this machine's (3.11), torch is the CPU build torch==2.13.0 (PyPI's Linux torch is a
multi-GB CUDA build), and nbval runs the kernels, so no frontend renders a widget.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FREEZE = ROOT / "tests" / "colab" / "pip-freeze.gpu.txt"  # googlecolab/backend-info, 2026-08-19
LOCK = ROOT / "constraints.txt"
TORCH = "torch==2.13.0"  # the CPU build stands in for Colab's torch 2.11.0+cu128
CUDA_BUILDS = {"torch", "torchaudio", "torchvision", "torchcodec"}  # Colab's CUDA wheels: not installed here
# Colab's versions the stand-in cannot hold, each with the reason (they come from the torch it installs instead)
NOT_AS_IN_COLAB = {"setuptools": "torch 2.13.0 needs setuptools>=77.0.3; Colab's torch 2.11 runs on its 75.2.0"}
# What runs the notebooks, at Colab's versions: Colab's own kernel and its pytest
RUNNER = ["ipykernel", "jupyter-client", "nbformat", "nbclient", "pytest"]
# What only the tests need, absent from Colab: at the lock's versions
HARNESS = ["nbval", "pytest-xdist"]
# The packages Colab has that the first cell may change, each with the reason. Everything else Colab has must
# stay at Colab's version (tests/test_colab.py checks the record against this list, both ways).
ALLOWED_CHANGES = {
    "datasets": "TRL 1.16 needs datasets>=4.7 for SFTTrainer's data handling; Colab has 4.0.0",
    "pyarrow": "datasets 5.2 needs pyarrow>=24 (TRL 1.16 itself >=21); Colab has 18.1.0",
    "huggingface-hub": "datasets 5.2 needs huggingface-hub>=1.31; Colab has 1.27.0",
}
# In Colab pip takes the newest release the other packages allow for those, and for the packages Colab lacks
# (trl, bitsandbytes). The stand-in holds them to fixed versions, so that a release elsewhere cannot change a
# run: the lock's (the newest the kit is tested with), except where Colab's packages rule the lock's out.
HOLD_AT = {"huggingface-hub": "1.33.0"}  # Colab's transformers 5.15 needs <2.0; the lock's 2.4.0 is for 5.24
RECORD = "first-cell.json"  # in the venv: Colab's versions before the cell, and after


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_pins(path: Path) -> dict[str, str]:
    """name -> version of every `name==version` line (local labels such as +cu128 dropped)."""
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#+]+)", line.strip())
        if m:
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def colab_pins() -> dict[str, str]:
    """Colab's versions, without its CUDA builds of torch (URL-installed packages have no `==` and drop out)."""
    return {n: v for n, v in read_pins(FREEZE).items() if n not in CUDA_BUILDS and n not in NOT_AS_IN_COLAB}


def kit_requirements() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def requirement_name(req: str) -> str:
    return canonical(re.match(r"[A-Za-z0-9._-]+", req).group(0))


def pip(venv: Path, *args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(venv / "bin" / "python"), "-m", "pip", *args], check=True, **kw)


def freeze(venv: Path) -> dict[str, str]:
    out = pip(venv, "list", "--format=json", "--disable-pip-version-check", capture_output=True, text=True).stdout
    return {canonical(p["name"]): p["version"].split("+")[0] for p in json.loads(out)}


def write_constraints(path: Path, pins: dict[str, str]) -> Path:
    path.write_text("".join(f"{n}=={v}\n" for n, v in sorted(pins.items())))
    return path


def site_packages(venv: Path) -> Path:
    return next(venv.glob("lib/python3*/site-packages"))


def link_torch(main_venv: Path, venv: Path) -> bool:
    """Torch 2.13.0 from `main_venv` (make's .venv), hard-linked file by file as its RECORD lists them: the same
    1 GB of files without a second copy or a second unpacking. False (nothing linked) where it cannot be done."""
    try:
        src = site_packages(main_venv)
        record = next(src.glob("torch-2.13.0*.dist-info")) / "RECORD"
    except StopIteration:
        return False
    dst = site_packages(venv)
    files = [line.rsplit(",", 2)[0] for line in record.read_text().splitlines() if line]
    try:
        for name in files:
            if name.startswith("../"):  # console scripts (torchrun): their first line names main_venv's python
                continue
            (dst / name).parent.mkdir(parents=True, exist_ok=True)
            os.link(src / name, dst / name)
    except OSError:  # another file system, or no hard links there
        subprocess.run(["rm", "-rf", *(str(dst / top) for top in ("torch", "torchgen", "functorch"))], check=True)
        for d in dst.glob("torch-2.13.0*.dist-info"):
            shutil.rmtree(d)
        return False
    return True


def image(venv: Path, main_venv: Path | None = None) -> None:
    """Colab's versions of every package Colab has that the kit or the notebook runner needs, and their own."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    colab = colab_pins()
    constraints = write_constraints(venv / "colab-constraints.txt", colab)
    quick = ("-q",)  # (bytecode compiled at install: where PYTHONDONTWRITEBYTECODE is set, never on import)
    if not (main_venv and link_torch(main_venv, venv)):
        pip(venv, "install", *quick, "--upgrade", "pip")
        pip(venv, "install", *quick, TORCH)  # with a current pip: older ones refuse the file's +cpu label
    pip(venv, "install", *quick, f"pip=={colab['pip']}")  # Colab's pip resolves the first cell's install
    wanted = [requirement_name(r) for r in kit_requirements()] + [canonical(n) for n in RUNNER]
    present = [n for n in wanted if n in colab]
    pip(venv, "install", *quick, "-c", str(constraints), *present)
    lock = read_pins(LOCK)
    pip(venv, "install", *quick, "-c", str(constraints), *(f"{n}=={lock[canonical(n)]}" for n in HARNESS))
    (venv / "image.json").write_text(json.dumps(freeze(venv), indent=1, sort_keys=True))


def snapshot_repository(where: Path) -> Path:
    """A git repository of the working tree as it is now (tracked and untracked files, not ignored ones)."""
    if where.exists():
        shutil.rmtree(where)
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, where / name)
    git = ["git", "-c", "user.name=lora-lab", "-c", "user.email=lora-lab@localhost", "-c", "gc.auto=0", "-C", str(where)]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"]):
        subprocess.run(git + args, check=True)
    return where


def first_cell() -> str:
    nb = json.loads((ROOT / "notebooks" / "00_start_here.ipynb").read_text())
    src = next(c["source"] for c in nb["cells"] if c["cell_type"] == "code")
    return src if isinstance(src, str) else "".join(src)


def repository_url() -> str:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]


def run_first_cell(python: Path, content: Path, mirror: Path, env: dict) -> subprocess.CompletedProcess:
    """The notebooks' first cell as Colab runs it: google.colab imported, /content/lora-lab the clone's folder,
    the kit's GitHub URL answered by `mirror` (git's url.insteadOf) instead of the network."""
    cell = first_cell()
    assert cell.count("/content/lora-lab") == 1, "the clone's folder is named once in the cell"
    cell = cell.replace("/content/lora-lab", str(content / "lora-lab"))
    runner = ("import importlib.machinery, sys, types\ncolab = types.ModuleType('google.colab')\n"
              "colab.__spec__ = importlib.machinery.ModuleSpec('google.colab', None)\n"
              "sys.modules['google.colab'] = colab\n"
              f"exec(compile({cell!r}, 'colab-cell', 'exec'))\n")
    env = {**env, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{mirror.as_uri()}.insteadOf",
           "GIT_CONFIG_VALUE_0": f"{repository_url()}.git"}
    content.mkdir(parents=True, exist_ok=True)
    return subprocess.run([str(python), "-c", runner], cwd=content, env=env, capture_output=True, text=True,
                          timeout=900)


def restore(venv: Path, image: dict[str, str]) -> None:
    """Put the venv back to Colab's image: what an earlier first cell added is removed, what it changed reverted."""
    now = freeze(venv)
    extra = sorted(n for n in now if n not in image)
    if extra:
        pip(venv, "uninstall", "-q", "-y", *extra)
    changed = [f"{n}=={v}" for n, v in sorted(image.items()) if now.get(n) != v]
    if changed:
        pip(venv, "install", "-q", "--no-deps", *changed)


def install(venv: Path) -> None:
    """Run the first cell twice (a second Run All must change nothing) over Colab's image; record what changed."""
    scratch = venv / "content-run"
    if scratch.exists():
        shutil.rmtree(scratch)
    image = json.loads((venv / "image.json").read_text())
    # Packages the cell adds, or must upgrade, come from PyPI; they are held to fixed versions here so that a
    # release elsewhere cannot change this test. Colab's own packages get no constraint: pip keeps each one that
    # meets the kit's range, as in Colab.
    lock = read_pins(LOCK)
    held = {n: HOLD_AT.get(n, v) for n, v in lock.items() if n not in image or n in ALLOWED_CHANGES}
    inputs = {"dependencies": kit_requirements(), "held": held}
    last = venv / RECORD
    if not last.exists() or json.loads(last.read_text()).get("inputs") != inputs:
        restore(venv, image)  # the kit's requirements changed: start again from Colab's image
    else:  # the same requirements give the same packages: only the kit itself is installed anew
        pip(venv, "uninstall", "-q", "-y", "lora-lab", capture_output=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")}
    env.update(PIP_CONSTRAINT=str(write_constraints(venv / "first-cell-constraints.txt", held)),
               PIP_DISABLE_PIP_VERSION_CHECK="1", PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    mirror = snapshot_repository(scratch / "origin")
    runs = []
    for attempt in ("first run", "Run all again"):
        out = run_first_cell(venv / "bin" / "python", scratch / "content", mirror, env)
        if out.returncode != 0:
            sys.exit(f"the first cell failed in the Colab stand-in ({attempt}):\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
        runs.append(freeze(venv))
    record = {"colab": colab_pins(), "before": image, "after": runs[0], "after_again": runs[1], "inputs": inputs}
    last.write_text(json.dumps(record, indent=1, sort_keys=True))
    changed = {n: (image.get(n), v) for n, v in runs[0].items() if image.get(n) != v}
    print("the first cell changed, in the Colab stand-in:")
    for n, (old, new) in sorted(changed.items()):
        print(f"  {n:24s} {old or '(not in Colab)':>14s} -> {new}")


def workdir(where: Path) -> None:
    """The notebooks (both editions, with solutions) and the stand-in's tests, in a folder outside the clone."""
    if where.exists():
        shutil.rmtree(where)
    for nb in (ROOT / "notebooks").rglob("*.ipynb"):
        if ".ipynb_checkpoints" not in nb.parts:
            dest = where / nb.relative_to(ROOT)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(nb, dest)
    for f in ("notebooks/conftest.py", "notebooks/sanitize.cfg", "tests/conftest.py", "tests/test_colab.py",
              "tests/test_widgets.py", "tests/colab_standin.py", "tests/colab/pip-freeze.gpu.txt", "pyproject.toml",
              "constraints.txt", "README.md"):
        (where / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, where / f)


if __name__ == "__main__":
    commands = {"image": image, "install": install, "workdir": workdir}
    if not 3 <= len(sys.argv) <= 3 + (sys.argv[1:2] == ["image"]) or sys.argv[1] not in commands:
        sys.exit("usage: python tests/colab_standin.py image VENV [MAIN_VENV], install VENV, or workdir DIR")
    commands[sys.argv[1]](*(Path(a).resolve() for a in sys.argv[2:]))
