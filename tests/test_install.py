"""The kit installed from a wheel (`pip install .` / `pip install git+URL`), and the notebooks' one install cell.

The wheel runs in a fresh virtual environment outside the repository, reusing this venv's libraries through
a .pth file (no download, no second copy of torch), so what is tested is the installed lora_lab alone. Colab's
first cell itself runs in the Colab stand-in, the second pass of `make test`: tests/colab_standin.py runs it
twice over Colab's package versions and tests/test_colab.py checks what it installed and changed.
"""

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Run inside the installed kit: the default model and data load, one exercise check passes, the CLI exists.
SMOKE = r"""
import json, shutil, sys
from transformers.utils import logging
logging.disable_progress_bar()
import lora_lab
from lora_lab import exercises
from lora_lab.paths import EMBEDDED_MODEL
model = lora_lab.load_base_model()
rows = {split: len(lora_lab.load_instruction_dataset(split=split)) for split in ("train", "eval")}
verdict = exercises.check_weights_gib(lambda n, bits: n * bits / 8 / 2**30)
lora_lab.set_language("vi")  # the Vietnamese catalogue, read from the installed package
vietnamese = repr(exercises.check_weights_gib(lambda n, bits: n * bits / 8 / 2**30))
print(json.dumps({"vietnamese": vietnamese, "file": lora_lab.__file__, "model_dir": str(EMBEDDED_MODEL), "params": model.num_parameters(),
                  "rows": rows, "verdict": bool(verdict),
                  "cli": shutil.which("lora-lab"), "path": sys.path}))
"""


def fresh_venv(where: Path) -> Path:
    """A venv without the kit whose interpreter sees this venv's packages (torch, transformers, ...) last."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True)
    purelib = next(where.glob("lib/python*/site-packages"))
    (purelib / "_kit_libraries.pth").write_text(site.getsitepackages()[0] + "\n")
    return where / "bin" / "python"


def clean_env(venv: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    return env


def smoke(python: Path, cwd: Path) -> dict:
    out = subprocess.run([str(python), "-c", SMOKE], cwd=cwd, env=clean_env(python.parent.parent),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def assert_installed_kit(result: dict, venv: Path) -> None:
    assert Path(result["file"]).is_relative_to(venv), f"lora_lab came from {result['file']}, not the install"
    assert not any(Path(p).resolve() == ROOT for p in result["path"] if p), "the repository is on sys.path"
    assert Path(result["model_dir"]).is_relative_to(venv)  # the embedded model shipped inside the package
    assert result["params"] == 2_361_024 and result["rows"] == {"train": 1200, "eval": 250}
    assert result["verdict"] is True
    assert result["vietnamese"].startswith("Bài tập 00.2 · weights_gib: đúng — ") and "12,55 GiB" in result["vietnamese"]
    assert result["cli"] and Path(result["cli"]).is_relative_to(venv)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(out), str(ROOT)], check=True, env=clean_env(Path(sys.prefix)), timeout=300)
    return next(out.glob("lora_lab-*.whl"))


def test_wheel_holds_every_subpackage_and_the_embedded_data(wheel):
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {p.parent.relative_to(ROOT).as_posix() for p in (ROOT / "lora_lab").rglob("__init__.py")}
    for pkg in packages:
        assert f"{pkg}/__init__.py" in names, f"{pkg} is missing from the wheel: list it in pyproject.toml"
    for po in (ROOT / "lora_lab" / "locale").rglob("*.po"):  # the message catalogues, read at run time
        assert po.relative_to(ROOT).as_posix() in names, f"{po.name} is missing from the wheel: pyproject package-data"
    assert "lora_lab/locale/vi/LC_MESSAGES/lora_lab.po" in names
    for data in (ROOT / "data").rglob("*"):
        if data.is_file():
            assert f"lora_lab/embedded/{data.relative_to(ROOT / 'data').as_posix()}" in names


def test_wheel_installs_and_runs_without_the_repository(wheel, tmp_path):
    python = fresh_venv(tmp_path / "venv")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
                   check=True, env=clean_env(tmp_path / "venv"), timeout=300)
    assert_installed_kit(smoke(python, tmp_path), tmp_path / "venv")


# ----------------------------------------------------------------------------- Colab's first cell


def colab_cell() -> str:
    import jupytext

    nb = jupytext.read(ROOT / "notebooks" / "00_start_here.py")
    return next(c.source for c in nb.cells if c.cell_type == "code")


def test_every_notebook_has_the_same_colab_cell():
    import jupytext

    first = colab_cell()
    for py in sorted((ROOT / "notebooks").rglob("[0-9]*.py")):
        cell = next(c.source for c in jupytext.read(py).cells if c.cell_type == "code")
        assert cell == first, f"{py.name}'s install cell differs from 00's"
