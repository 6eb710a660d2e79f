"""Runs that survive faults: a finished run is never overwritten, checkpoints resume through transformers'
own resume_from_checkpoint, a killed run continues exactly, and a cut-off final save never looks finished.

The runs are tiny on purpose (64 training rows, 12 steps of 8): they test the plumbing, not the lift.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from lora_lab import runs
from lora_lab.cli import main
from lora_lab.finetune import finetune, load_trained, resolve_config
from lora_lab.runs import RunFolderError, check_out, read_loss_log

ROOT = Path(__file__).resolve().parent.parent
QUIET = dict(progress=False, log=lambda *a: None)
STEPS, EVERY = 12, 4
FLAGS = ["--max-steps", str(STEPS), "--save-steps", str(EVERY), "--logging-steps", "1",
         "--per-device-train-batch-size", "8", "--max-new-tokens", "4"]


def small(data, **kw):
    return resolve_config("tiny", {"dataset": str(data), "max_steps": STEPS, "save_steps": EVERY, "logging_steps": 1,
                                   "per_device_train_batch_size": 8, "max_new_tokens": 4, **kw})


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, small_data):
    out = tmp_path_factory.mktemp("uninterrupted")
    finetune(small(small_data), out=out, **QUIET)
    return out


def snapshot(out: Path) -> dict:
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- no silent overwrite


def test_a_finished_run_is_refused_and_left_as_it_was(uninterrupted, small_data, capsys):
    record = json.loads((uninterrupted / "run.json").read_text())
    assert record["status"] == "finished" and record["config"]["save_steps"] == EVERY
    before = snapshot(uninterrupted)
    with pytest.raises(RunFolderError) as err:
        finetune(small(small_data, lora_r=8), out=uninterrupted, **QUIET)
    assert str(err.value) == (f"out={str(uninterrupted)!r} holds a finished fine-tune (adapter/, metrics.json); "
                              "nothing was changed. Choose a new --out folder, or --overwrite to replace it "
                              "(in Python: out=..., overwrite=True)")
    assert main(["finetune", "--out", str(uninterrupted)]) == 2
    assert "holds a finished fine-tune" in capsys.readouterr().err
    with pytest.raises(RunFolderError, match="holds a finished fine-tune; there is nothing to resume"):
        finetune(out=uninterrupted, resume=True, **QUIET)
    assert snapshot(uninterrupted) == before


def test_checkpoints_every_n_steps_keep_the_newest(uninterrupted):
    assert [step for step, _ in runs.checkpoints(uninterrupted)] == [8, 12]  # save_total_limit=2 of 4, 8, 12
    m = json.loads((uninterrupted / "metrics.json").read_text())
    assert m["checkpoints_saved"] == 3 and m["checkpoint_seconds"] > 0 and m["resumed_from_step"] is None


# ----------------------------------------------------------------------------- a real kill, then resume


def test_a_killed_run_resumes_exactly_where_it_stopped(uninterrupted, tmp_path, capsys):
    out = tmp_path / "killed"
    data = json.loads((uninterrupted / "run.json").read_text())["config"]["dataset"]
    cmd = [sys.executable, "-m", "lora_lab", "finetune", "--dataset", data, *FLAGS, "--out", str(out), "--no-progress"]
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.time() + 300
            while not runs.checkpoints(out):  # the first checkpoint, complete
                assert proc.poll() is None and time.time() < deadline, (tmp_path / "stderr.txt").read_text()[-3000:]
                time.sleep(0.01)
            proc.send_signal(signal.SIGKILL)  # a disconnect or the OOM killer: no chance to clean up
        finally:
            proc.kill()
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL  # killed midway, not finished on its own
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # SIGKILL leaves no chance to record it
    assert not (out / "metrics.json").exists()
    with pytest.raises(ValueError, match="did not finish"):
        load_trained(out)

    assert main(["finetune", "--out", str(out)]) == 2  # neither overwritten nor mistaken for finished
    assert "did not finish (its last checkpoint is step" in capsys.readouterr().err
    assert main(["finetune", "--out", str(out), "--resume", "--no-progress"]) == 0  # the run's own settings
    want, got = json.loads((uninterrupted / "metrics.json").read_text()), json.loads((out / "metrics.json").read_text())
    assert got["resumed_from_step"] in (EVERY, 2 * EVERY) and got["steps"] == STEPS
    # the loss log continues from the checkpoint: every step once, no gap, no repeat, and (CPU training
    # is deterministic for a given machine and thread count) the same values as the uninterrupted run
    log = read_loss_log(out)
    assert [row["step"] for row in log] == list(range(1, STEPS + 1))
    assert log == read_loss_log(uninterrupted)
    assert got["metric_after"] == want["metric_after"] and got["final_loss"] == want["final_loss"]
    ours, theirs = (load_file(o / "adapter" / "adapter_model.safetensors") for o in (out, uninterrupted))
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)


def test_resume_with_other_settings_is_refused(uninterrupted, tmp_path, small_data):
    out = tmp_path / "run"
    out.mkdir()
    record = json.loads((uninterrupted / "run.json").read_text())
    runs.write_record(out, {**record, "status": "running"})
    with pytest.raises(ValueError, match=r"started with other settings \(lora_r: the run has 16, now 8\)"):
        finetune(small(small_data, lora_r=8), out=out, resume=True, **QUIET)
    with pytest.raises(RunFolderError, match="it saved no checkpoint\\), so there is nothing to resume from"):
        finetune(small(small_data), out=out, resume=True, **QUIET)


# ----------------------------------------------------------------------------- a cut-off final save


def test_an_interrupted_final_save_is_not_a_finished_run(small_data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    config = small(small_data, max_steps=2, save_steps=2)
    write = runs.write_atomic

    def ctrl_c_midway(path, data):
        if Path(path).name == "metrics.json":  # half the file under its temporary name, then Ctrl-C
            Path(path).with_name(f".metrics.json.tmp-{os.getpid()}").write_text(data[: len(data) // 2])
            signal.raise_signal(signal.SIGINT)
        write(path, data)

    monkeypatch.setattr(runs, "write_atomic", ctrl_c_midway)
    with pytest.raises(KeyboardInterrupt):
        finetune(config, out=out, **QUIET)
    monkeypatch.undo()
    assert json.loads((out / "run.json").read_text())["status"] == "interrupted"  # recorded as such, not "running"
    assert not (out / "metrics.json").exists() and (out / "adapter" / "adapter_config.json").exists()
    trained = load_file(out / "adapter" / "adapter_model.safetensors")  # complete: it was renamed into place
    with pytest.raises(ValueError, match="holds a fine-tune that did not finish"):
        load_trained(out)
    with pytest.raises(RunFolderError, match=r"did not finish \(its last checkpoint is step 2\); nothing was changed. "
                                             "Choose --resume to continue from it, --overwrite to start again"):
        finetune(config, out=out, **QUIET)
    done = finetune(out=out, resume=True, **QUIET)  # nothing left to train: it saves what was cut off
    assert done.metrics["resumed_from_step"] == 2 and done.metrics["steps"] == 2
    assert runs.read_record(out)["status"] == "finished" and not list(out.glob(".*.tmp-*"))
    assert [row["step"] for row in read_loss_log(out)] == [1, 2]
    again_saved = load_file(out / "adapter" / "adapter_model.safetensors")  # from the final checkpoint: the same
    assert trained.keys() == again_saved.keys() and all((trained[k] == again_saved[k]).all() for k in trained)
    load_trained(out, loader="lora_lab")
    again = finetune(config, out=out, overwrite=True, **QUIET)  # asked for: replaced, from step 0
    assert again.metrics["resumed_from_step"] is None and runs.read_record(out)["status"] == "finished"


# ----------------------------------------------------------------------------- the folder rules, no training


def test_what_check_out_allows(tmp_path):
    settings = {"lora_r": 16}
    assert check_out(tmp_path / "new", settings).fresh  # a new or empty folder
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        check_out(tmp_path / "file", settings)
    other = tmp_path / "other"
    (other / "adapter").mkdir(parents=True)  # someone's adapter, not a lora-lab run
    with pytest.raises(RunFolderError, match="already holds adapter from something that is not a lora-lab run"):
        check_out(other, settings)
    (other / "adapter").rmdir()
    (other / "notes.txt").write_text("mine")
    assert check_out(other, settings).fresh  # nothing of a run's to overwrite
    with pytest.raises(ValueError, match="choose one"):
        check_out(other, settings, overwrite=True, resume=True)
    with pytest.raises(RunFolderError, match="holds no fine-tune to resume"):
        check_out(other, settings, resume=True)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    runs.write_record(unfinished, {"status": "running", "config": settings})
    assert check_out(unfinished, settings).fresh  # stopped before its first checkpoint: nothing to lose
    cut = unfinished / "checkpoints" / "checkpoint-4"
    cut.mkdir(parents=True)
    (cut / "adapter_model.safetensors").write_bytes(b"")
    (cut / "trainer_state.json").write_text('{"global_step": 4, "log_hi')  # cut off mid-write
    assert runs.checkpoints(unfinished) == [] and check_out(unfinished, settings).fresh
    (cut / "trainer_state.json").write_text('{"global_step": 4}')
    assert runs.checkpoints(unfinished) == [(4, cut)]
    with pytest.raises(RunFolderError, match="its last checkpoint is step 4"):
        check_out(unfinished, settings)
    assert check_out(unfinished, settings, resume=True).checkpoint == cut


def test_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    runs.write_atomic(target, "old")

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(runs.os, "replace", crash)
    with pytest.raises(OSError):
        runs.write_atomic(target, "new, longer content")
    assert target.read_text() == "old"  # the old file stays whole; only the temporary name is partial
