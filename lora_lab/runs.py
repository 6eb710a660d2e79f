"""A fine-tune's output folder: what it holds, whether the run finished, and how it is written so that a
crash never leaves a file that loads as if complete.

    out/run.json      {"status": "running" | "finished", "config": ..., ...}: written first, marked finished last
    out/checkpoints/  checkpoint-N/ by transformers' Trainer: adapter, optimizer, scheduler, RNG states, trainer_state.json
    out/adapter/      adapter_config.json + adapter_model.safetensors (PEFT's format)
    out/loss_log.csv, out/metrics.json

Every file is written under a temporary name and renamed into place (a rename within one folder is
atomic on POSIX and Windows), and the adapter folder is written beside its final name, then renamed.
A folder that holds a run is never overwritten unless asked (`overwrite=True`, `--overwrite`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from .i18n import _

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
OUTPUTS = ("adapter", "loss_log.csv", "metrics.json", CHECKPOINTS, RUN_FILE)  # what overwrite=True replaces
CHOICES = "a new --out folder, or --overwrite to replace it (in Python: out=..., overwrite=True)"


class RunFolderError(FileExistsError):
    """`out` holds a run that the call would overwrite, or no run where one was to be resumed."""


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write `data` to `path` under a temporary name in the same folder, flush it to disk, then rename it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def replace_dir(src: Path, dst: Path) -> None:
    """Put folder `src` (complete) in the place of `dst`."""
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(src, dst)


def write_loss_log(path: Path, log_history: list[dict]) -> None:
    """loss_log.csv: one row (step, loss, learning_rate, grad_norm) per logged training step."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", "loss", "learning_rate", "grad_norm"])
    for h in log_history:
        if "loss" in h:
            writer.writerow([h["step"], h["loss"], h.get("learning_rate"), h.get("grad_norm")])
    write_atomic(path, buf.getvalue())


def read_loss_log(out: str | os.PathLike) -> list[dict]:
    """The loss log a run wrote: one dict (step, loss, learning_rate, grad_norm) per logged step."""
    with open(Path(out) / "loss_log.csv") as f:
        return [{k: (float(v) if v not in ("", "None") else None) for k, v in row.items()} for row in csv.DictReader(f)]


# ----------------------------------------------------------------------------- the run record


def read_record(out: str | os.PathLike) -> dict | None:
    """out/run.json; a folder from before run.json (metrics.json only) counts as finished; None: no run here."""
    out = Path(out)
    if (out / RUN_FILE).exists():
        return json.loads((out / RUN_FILE).read_text())
    if (out / "metrics.json").exists():
        return {"status": "finished", "config": json.loads((out / "metrics.json").read_text()).get("config")}
    return None


def write_record(out: Path, record: dict) -> None:
    write_atomic(out / RUN_FILE, json.dumps(record, indent=2, default=str) + "\n")


def checkpoints(out: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every complete checkpoint, oldest first: trainer_state.json, which the Trainer
    writes last, reads back and names the folder's step (a checkpoint cut off mid-write has none)."""
    found = []
    for folder in (Path(out) / CHECKPOINTS).glob("checkpoint-*"):
        try:
            step = int(folder.name.removeprefix("checkpoint-"))
            state = json.loads((folder / "trainer_state.json").read_text())
        except (ValueError, OSError):  # not a number, no state file, or cut off mid-write
            continue
        if state.get("global_step") == step and (folder / "adapter_model.safetensors").exists():
            found.append((step, folder))
    return sorted(found)


def trained_out(checkpoint: Path) -> bool:
    """True if the checkpoint was saved at the last training step (global_step has reached max_steps)."""
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return state.get("max_steps", 0) > 0 and state["global_step"] >= state["max_steps"]


def _describe(out: Path) -> str:
    done = checkpoints(out)
    where = f"its last checkpoint is step {done[-1][0]}" if done else "it saved no checkpoint"
    return f"out={str(out)!r} holds a fine-tune that did not finish ({where})"


@dataclass
class RunStart:
    fresh: bool                   # start from step 0 (clearing what a previous attempt left)
    checkpoint: Path | None       # resume from this checkpoint
    record: dict | None           # the run record to continue (resume) or None
    note: str | None = None       # what is replaced, to say so


def check_out(out: str | os.PathLike, config: dict, overwrite: bool = False, resume: bool = False) -> RunStart:
    """Decide what a fine-tune may do with folder `out`, before anything loads; nothing is changed here.

    config: the run's settings as a JSON-like dict. Raises RunFolderError (a FileExistsError) for a
    finished run without overwrite, an unfinished one with checkpoints without resume or overwrite,
    earlier outputs in a folder that is not a run; ValueError for resume with other settings.
    """
    out = Path(out)
    if overwrite and resume:
        raise ValueError("overwrite=True and resume=True: choose one (--overwrite starts again, --resume continues)")
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"out={str(out)!r} is a file; a fine-tune writes a folder")
    record = read_record(out) if out.is_dir() else None
    if resume:
        if record is None:
            raise RunFolderError(f"out={str(out)!r} holds no fine-tune to resume; start one without --resume")
        if record.get("status") == "finished":
            raise RunFolderError(f"out={str(out)!r} holds a finished fine-tune; there is nothing to resume. "
                                 f"Choose {CHOICES}")
        differ = {k: (record["config"].get(k), v) for k, v in config.items() if record["config"].get(k) != v}
        if differ:
            lines = "; ".join(f"{k}: the run has {a!r}, now {b!r}" for k, (a, b) in differ.items())
            raise ValueError(f"resume: out={str(out)!r} was started with other settings ({lines}). Resume it with "
                             "its own settings (`lora-lab finetune --out ... --resume` alone reads them), or start "
                             f"again: {CHOICES}")
        done = checkpoints(out)
        if not done:
            raise RunFolderError(f"{_describe(out)}, so there is nothing to resume from; "
                                 "start again with --overwrite (overwrite=True)")
        return RunStart(False, done[-1][1], record)
    if overwrite or record is None and not any((out / name).exists() for name in OUTPUTS):
        return RunStart(True, None, None)
    if record is None:
        found = [name for name in OUTPUTS if (out / name).exists()]
        raise RunFolderError(f"out={str(out)!r} already holds {', '.join(found)} from something that is not a "
                             f"lora-lab run; nothing was changed. Choose {CHOICES}")
    if record.get("status") == "finished":
        raise RunFolderError(f"out={str(out)!r} holds a finished fine-tune (adapter/, metrics.json); nothing was "
                             f"changed. Choose {CHOICES}")
    if checkpoints(out):
        raise RunFolderError(f"{_describe(out)}; nothing was changed. Choose --resume to continue from it, "
                             "--overwrite to start again, or a new --out folder (in Python: resume=True, "
                             "overwrite=True, out=...)")
    # an attempt that stopped before its first checkpoint: nothing to resume, nothing finished to lose
    return RunStart(True, None, None, _("out={out!r} holds a fine-tune that did not finish (it saved no checkpoint): "
                                        "starting it again").format(out=str(out)))


def clear(out: Path) -> None:
    """Remove what a run writes (and temporary files a crash left), nothing else."""
    for name in OUTPUTS:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for stale in _stale(out):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()


def _stale(out: Path) -> list[Path]:
    return list(out.glob(".*.tmp-*")) + list(out.glob(".adapter.partial"))


def drop_incomplete(out: Path) -> list[str]:
    """Delete checkpoint folders cut off mid-write and temporary files a crash left; return their names."""
    complete = {folder for _, folder in checkpoints(out)}
    dropped = [f for f in (out / CHECKPOINTS).glob("checkpoint-*") if f.is_dir() and f not in complete] + _stale(out)
    for path in dropped:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return sorted(p.name for p in dropped)
