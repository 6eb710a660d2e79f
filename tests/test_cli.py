"""The `lora-lab` command: flags for every setting, clear refusals, and runs under `accelerate launch`."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lora_lab.cli import main
from lora_lab.config import resolve_config

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


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if a model or dataset starts loading."""
    def boom(*a, **k):
        raise AssertionError("a model or dataset was loaded before the settings were checked")
    for name in ("load_for_training", "load_instruction_dataset"):
        monkeypatch.setattr(f"lora_lab.finetune.{name}", boom)


def test_numbers_written_as_text_in_a_config_file_are_read_and_reported(tmp_path, capsys):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"learning_rate": "2e-4", "max_steps": "20", "lora_r": 8}))
    assert main(["finetune", "--config", str(path), "--print-config"]) == 0
    out, err = capsys.readouterr()
    shown = json.loads(out)
    assert (shown["config"]["learning_rate"], shown["config"]["max_steps"]) == (2e-4, 20)
    assert shown["coerced"] == {"learning_rate": "'2e-4' read as 0.0002", "max_steps": "'20' read as 20"}
    assert f"lora-lab: {path}: learning_rate '2e-4' read as 0.0002" in err


def test_a_yaml_config_file_reads_like_json(tmp_path, capsys):
    path = tmp_path / "settings.yaml"
    path.write_text("profile: tiny\nlearning_rate: 1.0e-4\ntarget_modules: all-linear\ndouble_quant: no\n")
    assert main(["finetune", "--config", str(path), "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["profile"], config["learning_rate"], config["double_quant"]) == ("tiny", 1e-4, False)
    assert config["target_modules"] == "all-linear"  # one value, never a list of letters


@pytest.mark.parametrize("settings, words", [
    ({"learning_rate": "fast"}, "learning_rate='fast' is not accepted; learning_rate takes a number > 0"),
    ({"lora_r": 8.5}, "lora_r=8.5 is not accepted; lora_r takes an integer >= 1, not a float"),
    ({"double_quant": "false"}, "double_quant='false' is not accepted; double_quant takes true or false"),
    ({"target_modules": ["all-linear"]}, "'all-linear' stands alone"),
    ({"sample_prompts": "Hi?"}, "a single string is never split"),
    ({"profile": "llama2"}, "profile='llama2' is not accepted; profile takes one of ('tiny', 'llama2-7b-t4', 'llama2-70b-fsdp')"),
])
def test_a_bad_value_in_a_config_file_stops_before_anything_loads(tmp_path, capsys, nothing_loads, settings, words):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    for extra in ([], ["--print-config"]):
        assert main(["finetune", "--config", str(path), "--out", str(tmp_path / "run"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"lora-lab: error: {path}: ") and words in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flag, value, words", [
    ("--lora-r", "abc", "lora_r='abc' is not accepted; lora_r takes an integer >= 1"),
    ("--learning-rate=-1e-4", None, "learning_rate='-1e-4' is not accepted; learning_rate takes a number > 0"),
    ("--lora-dropout", "1.5", "lora_dropout='1.5' is not accepted; lora_dropout takes a number in [0, 1)"),
    ("--max-steps", "0", "max_steps='0' is not accepted; max_steps takes an integer >= 1, or -1"),
    ("--seed", "-3", "seed='-3' is not accepted; seed takes an integer in [0, 2**32)"),
    ("--optim", "adam", "optim='adam' is not accepted; optim takes one of ('auto', 'adamw_torch'"),
    ("--lr-scheduler-type", "cosin", "lr_scheduler_type='cosin' is not accepted"),
    ("--quantization", "int8", "quantization='int8' is not accepted; quantization takes one of ('nf4', 'fp4', 'none')"),
    ("--target-modules", ",", "target_modules=[] is not accepted"),
    ("--profile", "llama", "profile='llama' is not accepted"),
])
def test_a_bad_flag_value_gets_the_same_check(capsys, nothing_loads, flag, value, words):
    assert main(["finetune", flag] + ([value] if value is not None else [])) == 2
    assert capsys.readouterr().err.startswith(f"lora-lab: error: {words}")


def test_a_target_that_matches_nothing_stops_finetune_and_estimate(tmp_path, capsys, nothing_loads):
    want = ("target_modules=['q_proj', 'v_porj']: 'v_porj' {} of LlamaForCausalLM; its linear layers are named: "
            "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj")
    assert main(["finetune", "--target-modules", "q_proj,v_porj", "--max-steps", "1", "--out", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err == "lora-lab: error: " + want.format("matched no module") + "\n"
    assert not (tmp_path / "r").exists()
    assert main(["estimate", "--target-modules", "q_proj,v_porj"]) == 2  # the same check, the same words
    assert capsys.readouterr().err == "lora-lab: error: " + want.format("matched no module") + "\n"


def test_all_linear_means_the_seven_projections_in_flags_and_files(tmp_path, capsys):
    assert main(["estimate"]) == 0  # the tiny profile's default: the seven projections by name
    seven = capsys.readouterr().out
    assert main(["estimate", "--target-modules", "all-linear"]) == 0
    assert capsys.readouterr().out == seven
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"target_modules": "all-linear"}))
    assert main(["estimate", "--config", str(path)]) == 0
    assert capsys.readouterr().out == seven


def test_resume_reads_the_runs_own_settings_and_excludes_overwrite(tmp_path, capsys):
    from lora_lab import runs

    out = tmp_path / "run"
    out.mkdir()
    saved = {**dataclasses.asdict(resolve_config("tiny", lora_r=4, max_steps=40)), "save_steps": 10}
    runs.write_record(out, {"status": "running", "config": saved})
    assert main(["finetune", "--out", str(out), "--resume", "--print-config"]) == 0
    config = json.loads(capsys.readouterr().out)["config"]
    assert (config["lora_r"], config["max_steps"], config["save_steps"]) == (4, 40, 10)
    with pytest.raises(SystemExit) as exit_:
        main(["finetune", "--out", str(out), "--resume", "--overwrite"])
    assert exit_.value.code == 2 and "not allowed with argument --resume" in capsys.readouterr().err


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
    assert metrics["sharding"] == "ddp" and len(metrics["peak_memory_mb_per_process"]) == 2
    assert metrics["memory_estimate_mb"]["parallel_buffers"] == metrics["memory_estimate_mb"]["gradients"]  # DDP's buckets
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
