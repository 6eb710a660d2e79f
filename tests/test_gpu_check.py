"""benchmarks/gpu_check.py, run small on the CPU: the same code as the GPU check, so it cannot rot unseen."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--layers", "2", "--hidden-size", "256", "--intermediate-size", "512", "--heads", "4", "--vocab-size", "2048",
         "--seq-len", "64", "--batch-size", "2", "--steps", "2", "--tiny-steps", "2", "--max-new-tokens", "2",
         "--parity-dtypes", "float32"]


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "benchmarks" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(torch.cuda.is_available(), reason="the small run is the CPU's; a GPU runs the full check")
def test_small_run_on_the_cpu(gpu_check, tmp_path):
    out = tmp_path / "check"
    report = gpu_check.main([str(out), *SMALL])
    assert report["errors"] == {}, report["errors"]
    # the table and every figure are written; the random checkpoint is gone
    text = (out / "gpu_check.md").read_text()
    for heading in ("## NF4 on cpu", "## llama2-7b-t4 profile", "## tiny profile end to end", "| optimizer state |"):
        assert heading in text
    assert json.loads((out / "gpu_check.json").read_text())["profile"]["fit"] is True
    assert not (out / "checkpoint").exists() and (out / "llama2-7b-t4" / "adapter").is_dir()
    # the profile trained on full-length rows, and the estimate's exact parts are what the model held
    p = report["profile"]
    assert p["steps"] == 2 and p["s_per_step"] > 0 and p["plan"]["optim"] == "adamw_torch"
    parts = p["parts"]
    for part in ("lora_weights", "gradients", "optimizer_state"):
        assert parts[part]["measured"] == parts[part]["estimate"] > 0, part
    assert parts["weights"]["measured"] == pytest.approx(parts["weights"]["estimate"], rel=0.01)
    assert parts["quant_constants"]["measured"] == pytest.approx(parts["quant_constants"]["estimate"], rel=0.1)
    assert p["dequantize_workspace"] == 512 * 256 * 4  # the largest 4-bit weight in fp32
    # NF4 parity rows for every shape; without double quantization the bytes are bitsandbytes' own
    assert len(report["parity"]) == 5 * 2
    assert all(r["packed_equal"] and r["absmax_equal"] for r in report["parity"] if not r["double_quant"])
    assert report["tiny"]["steps"] == 2 and report["tiny"]["precision"] == "fp32"
    # the sharded run needs 2 or more GPUs: here its command is written down, with the shipped accelerate config
    f = report["fsdp"]
    assert f["skipped"] == "FSDP needs 2 or more GPUs; this machine has 0" and "## the same profile fully sharded" in text
    from lora_lab.fsdp import ACCELERATE_CONFIG
    assert f"--config_file {ACCELERATE_CONFIG} --num_processes 2 -m lora_lab finetune" in f["command"]
    assert "--sharding fsdp --num-processes 2" in f["command"]
    with pytest.raises(SystemExit):  # never overwrites a finished check
        gpu_check.parse_args([str(out), *SMALL])
    # the GPU's lines of the table, rendered from this report with a GPU's figures added
    gib = 2**30
    report["environment"].update(gpu="Tesla T4", device_total=15 * gib, context=gib // 4, allocator_cap=14 * gib,
                                 cap_gib=14.75)
    p.update(peak_allocated=p["estimate_total"], peak_reserved=2 * p["estimate_total"], device_used=3 * gib,
             allocator_estimate=p["estimate_total"] * 0.8, peak_vs_estimate=0.25)
    f.pop("skipped")
    f.update(gpus=2, peak_mib=[900.0, 1100.0], peak_vs_estimate=[-0.1, 0.1], steps=2, train_seconds=3.0,
             plan={"precision": "bf16", "quant_storage": "bfloat16"},
             estimate_mib={"total": 1000.0, "weights": 400.0, "parallel_buffers": 50.0, "activations": 300.0})
    text = gpu_check.table(report)
    assert "Tesla T4 (15.0 GiB), capped to 14.75 GiB" in text and "measured +25.0%  **more than 15% off**" in text
    assert "| 1 | 1100 | +10.0% |" in text and "4-bit codes stored as bfloat16" in text


def test_bad_arguments_fail_before_anything_loads(gpu_check, tmp_path, capsys):
    for argv, message in (([str(tmp_path), "--layers", "0"], "--layers=0 must be a positive integer"),
                          ([str(tmp_path), "--hidden-size", "100"], "--hidden-size=100 must be a multiple of 64"),
                          ([str(tmp_path), "--parity-dtypes", "float64"], "--parity-dtypes")):
        with pytest.raises(SystemExit):
            gpu_check.parse_args(argv)
        assert message in capsys.readouterr().err
    if not torch.cuda.is_available():  # the full 7B shape needs a GPU: the error shows the small command
        with pytest.raises(SystemExit):
            gpu_check.parse_args([str(tmp_path)])
        assert "--layers 2 --hidden-size 256" in capsys.readouterr().err
