"""One ruff configuration (pyproject.toml) for the package, tests, benchmarks and notebooks."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is part of the dev extra: make test installs it"
    out = subprocess.run([ruff, "check", "lora_lab", "tests", "benchmarks", "notebooks"],
                         cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
