"""The `lora-lab` command: flags for every setting, clear refusals, and runs under `accelerate launch`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_lab.cli import main

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_every_setting_has_a_flag(capsys):
    argv = ["finetune", "--print-config", "--profile", "llama2-7b-t4", "--lora-r", "8", "--learning-rate", "1e-4",
            "--target-modules", "q_proj,v_proj", "--no-double-quant", "--max-steps", "10", "--model", "some/folder",
            "--sample-prompts", "Hi?|How are you?"]
    assert main(argv) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert config["profile"] == "llama2-7b-t4" and config["lora_r"] == 8 and config["learning_rate"] == 1e-4
    assert config["target_modules"] == ["q_proj", "v_proj"] and config["double_quant"] is False
    assert config["max_steps"] == 10 and config["lora_alpha"] == 16  # the rest stays the profile's
    assert config["model"] == "some/folder" and config["sample_prompts"] == ["Hi?", "How are you?"]


def test_a_misspelt_flag_stops_the_run(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--lora-rank", "8"])
    assert exit_.value.code == 2
    assert "unrecognized arguments: --lora-rank 8 (did you mean --lora-r?)" in capsys.readouterr().err


def test_a_config_file_with_an_unknown_key_is_refused(tmp_path, capsys):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"profile": "tiny", "bnb4bit_quant_type": "nf4"}))
    assert main(["finetune", "--config", str(path)]) == 2
    assert "unknown config key 'bnb4bit_quant_type'" in capsys.readouterr().err
    path.write_text(json.dumps({"lora_r": 4, "max_steps": 3}))
    assert main(["finetune", "--config", str(path), "--max-steps", "5", "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["lora_r"], config["max_steps"]) == (4, 5)  # flags win over the file


def test_7b_without_gpu_and_hub_offline_fail_clearly(capsys):
    assert main(["finetune", "--profile", "llama2-7b-t4"]) == 2
    err = capsys.readouterr().err
    assert "needs a GPU" in err and "lora-lab finetune --profile tiny" in err
    assert main(["finetune", "--dataset", "mlabonne/guanaco-llama2-1k"]) == 2
    assert "cannot load dataset 'mlabonne/guanaco-llama2-1k'" in capsys.readouterr().err


def test_estimate_plans_the_7b_recipe_for_a_t4(capsys):
    assert main(["estimate", "--profile", "llama2-7b-t4"]) == 0
    out = capsys.readouterr().out
    assert "planned for a Colab T4" in out and "fits in 14.75 GiB" in out
    assert main(["estimate", "--profile", "llama2-7b-t4", "--quantization", "none"]) == 0
    assert "does NOT fit in 14.75 GiB" in capsys.readouterr().out


def test_python_dash_m_and_the_console_script():
    for cmd in ([sys.executable, "-m", "lora_lab", "--help"], [str(Path(sys.executable).parent / "lora-lab"), "--help"]):
        if not Path(cmd[0]).exists():
            continue
        done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=60)
        assert done.returncode == 0 and "finetune" in done.stdout


def _accelerate(tmp_path, *launch):
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [str(accelerate), "launch", *launch, "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "lora_lab", "finetune", "--max-steps", "2", "--per-device-train-batch-size",
           "8", "--out", str(tmp_path), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((tmp_path / "metrics.json").read_text())


def test_runs_under_accelerate_launch_cpu(tmp_path):
    # without MPI, `accelerate launch --cpu` starts a single process whatever --num_processes says
    metrics = _accelerate(tmp_path, "--cpu", "--num_processes", "2")
    assert metrics["steps"] == 2 and metrics["plan"]["device"] == "cpu"


def test_runs_data_parallel_in_two_processes(tmp_path):
    # torchrun underneath: two CPU processes in one gloo group, each a copy of the model, batches split
    metrics = _accelerate(tmp_path, "--multi_gpu", "--num_processes", "2")
    assert metrics["num_processes"] == 2 and metrics["steps"] == 2
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
