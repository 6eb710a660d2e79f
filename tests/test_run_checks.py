"""What used to fail late, loudly or twice now fails first and clearly: a max_length no prompt fits in, a regex
target, a rank above a layer's width, bad data and settings files, a mistyped path, and a run that stops."""

import json
from pathlib import Path

import peft
import pytest
import torch

from lora_lab import (
    LoraConfig,
    inject_lora,
    load_base_model,
    load_instruction_dataset,
    load_tokenizer,
)
from lora_lab import finetune as finetune_module
from lora_lab.cli import main
from lora_lab.config import ConfigError, read_settings_file
from lora_lab.sft_data import describe_fit, fit_to_max_length
from lora_lab.train import TrainConfig, tokenize_rows, train


@pytest.fixture
def nothing_loads(monkeypatch):
    """Fail the test if the model starts loading."""
    def boom(*a, **k):
        raise AssertionError("the model was loaded before the settings and data were checked")
    monkeypatch.setattr("lora_lab.finetune.load_for_training", boom)


@pytest.fixture(scope="module")
def texts():
    return list(load_instruction_dataset()["text"])


# ---- 8 · a max_length that prompts fill ---------------------------------------------------------------------

def test_a_max_length_no_prompt_fits_in_stops_before_the_model_loads(tmp_path, capsys, nothing_loads):
    assert main(["finetune", "--max-length", "8", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == (
        "lora-lab: error: max_length=8 is not accepted for this data: it leaves no answer token in any of the 1200 "
        "training rows (the shortest prompt alone is 8 tokens). Use max_length >= 9 to train on some rows, 24 to cut "
        "none\n")
    assert not (tmp_path / "run").exists()  # no run.json left saying "running"


def test_rows_a_short_max_length_empties_are_counted_and_dropped(texts):
    tok = load_tokenizer()
    rows, report = fit_to_max_length(tok, texts, 16)
    assert (report["rows"], report["dropped"], len(rows)) == (1200, 326, 874)
    assert all(any(label != -100 for label in labels[1:]) for labels in rows["labels"])  # each keeps a target
    assert describe_fit(report, 16) == ("max_length=16: 326 of 1,200 training rows (27%) keep no answer token and are "
                                        "dropped; 810 more are cut short. At max_length=24 every row fits whole")
    rows, report = fit_to_max_length(tok, texts, report["fits_all"])
    assert (report["dropped"], report["cut"], len(rows)) == (0, 0, 1200) and describe_fit(report, 24) is None


def test_the_plain_loop_drops_rows_without_targets_instead_of_logging_nan(texts):
    tok = load_tokenizer()
    with pytest.raises(ValueError, match="max_length=8 leaves no answer token in any of the 64 rows"):
        tokenize_rows(tok, texts[:64], max_length=8)
    with pytest.warns(UserWarning, match=r"max_length=16 leaves no answer token in \d+ of 64 rows; they are dropped"):
        rows = tokenize_rows(tok, texts[:64], max_length=16)
    assert all(any(label != -100 for label in r["labels"][1:]) for r in rows)
    model = inject_lora(load_base_model(), LoraConfig(r=2, lora_alpha=4))
    with pytest.warns(UserWarning, match="they are dropped"):
        result = train(model, tok, texts[:64], TrainConfig(steps=3, batch_size=16, max_length=16))
    assert all(torch.isfinite(torch.tensor(result.losses)))


# ---- 9 · a target_modules string is one regex over whole names ----------------------------------------------

def test_a_regex_target_gets_the_same_check_in_estimate_and_finetune(tmp_path, capsys, nothing_loads):
    want = ("lora-lab: error: target_modules='.*self_attn.*' matched 'model.layers.0.self_attn', a LlamaAttention "
            "(and 3 more); LoRA wraps nn.Linear, Conv1D, or modules with in_features/out_features, and PEFT refuses "
            "such a target too; to select only the linear layers it matches, name them, e.g. "
            "'.*self_attn.*\\.(k_proj|o_proj|q_proj|v_proj)'\n")
    assert main(["estimate", "--target-modules", ".*self_attn.*"]) == 2
    assert capsys.readouterr().err == want
    assert main(["finetune", "--target-modules", ".*self_attn.*", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == want
    assert main(["estimate", "--target-modules", r".*self_attn\.(q|v)_proj"]) == 0  # one regex, never split at commas
    by_regex = capsys.readouterr().out
    assert main(["estimate", "--target-modules", "q_proj,v_proj"]) == 0
    assert capsys.readouterr().out == by_regex
    assert main(["finetune", "--print-config", "--target-modules", r".*\.(q|v)_proj"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["target_modules"] == r".*\.(q|v)_proj"


def test_a_name_given_as_a_string_is_told_that_a_string_is_a_regex(tmp_path, capsys, nothing_loads):
    path = tmp_path / "settings.json"
    path.write_text(json.dumps({"target_modules": "q_proj"}))
    assert main(["finetune", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "target_modules='q_proj' matched no module of LlamaForCausalLM" in err
    assert ("A string is one regular expression matched against whole module names such as "
            "'model.layers.0.self_attn.q_proj' (PEFT's rule); for names give a list, e.g. ['q_proj'], or a regex such "
            "as '.*q_proj'") in err


def test_peft_says_only_that_the_string_was_not_found():
    with pytest.raises(ValueError, match="Target modules q_proj not found in the base model. Please check the target "
                                         "modules and try again."):
        peft.get_peft_model(load_base_model(), peft.LoraConfig(target_modules="q_proj"))


# ---- 11 · a rank above a targeted layer's width ------------------------------------------------------------

def test_a_rank_above_a_layers_width_stops_estimate_and_finetune(tmp_path, capsys, nothing_loads):
    want = ("lora-lab: error: lora_r=256 is not accepted for 'model.layers.0.self_attn.q_proj', a 192→192 layer (and 27 "
            "more); lora_r must be at most min(in_features, out_features) = 192: choose lora_r <= 192 for these "
            "target_modules\n")
    assert main(["estimate", "--lora-r", "256"]) == 2
    assert capsys.readouterr().err == want
    assert main(["finetune", "--lora-r", "256", "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == want
    assert main(["estimate", "--lora-r", "192"]) == 0


def test_peft_takes_a_rank_above_the_width_without_a_word():
    model = peft.get_peft_model(load_base_model(), peft.LoraConfig(r=256, target_modules=["q_proj"]))
    assert model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.shape == (256, 192)


# ---- bad data and settings files, a mistyped path -----------------------------------------------------------

ROW = b'{"text": "<s>[INST] Repeat these words: cat dog [/INST] the answer is cat dog. </s>"}\n'


@pytest.mark.parametrize("content, words", [
    (b"", "the file holds no rows; each line must be one JSON object"),
    (b"\n  \n", "the file holds no rows"),
    (ROW + b'{"text": "<s>[INST] caf\xe9 [/INST] ok </s>"}\n', "line 2 is not UTF-8 text (byte 0xe9 at column 24); "
                                                             "save the file as UTF-8"),
    (ROW + b'{"text": }\n', "line 2 is not valid JSON (Expecting value)"),
], ids=["empty", "blank-lines", "not-utf8", "bad-json"])
def test_a_bad_data_file_is_named_with_its_line_before_the_model_loads(tmp_path, capsys, nothing_loads, content, words):
    file = tmp_path / "data.jsonl"
    file.write_bytes(content)
    assert main(["finetune", "--dataset", str(file), "--out", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err.startswith(f"lora-lab: error: {file}: {words}")
    assert not (tmp_path / "run").exists()


def test_a_settings_file_that_is_not_utf8_names_its_line_and_column(tmp_path, capsys):
    path = tmp_path / "settings.yaml"
    path.write_bytes(b"lora_r: 8\nsample_prompts: ['Xin ch\xe0o']\n")
    with pytest.raises(ConfigError, match=r"settings.yaml: not UTF-8 text: line 2, column 25 \(byte 0xe0\)"):
        read_settings_file(path)
    assert main(["finetune", "--config", str(path), "--print-config"]) == 2
    assert "not UTF-8 text: line 2, column 25" in capsys.readouterr().err


def test_a_missing_settings_file_names_the_flag(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["finetune", "--config", "nofile.yaml", "--print-config"]) == 2
    assert f"--config 'nofile.yaml': no such settings file (looked from {tmp_path})" in capsys.readouterr().err


def test_a_mistyped_local_path_is_not_reported_as_a_hub_failure(tmp_path, capsys, nothing_loads, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["finetune", "--dataset", "data/mine.jsonl", "--out", "run"]) == 2
    assert capsys.readouterr().err == (f"lora-lab: error: dataset 'data/mine.jsonl' is not a file or folder here (looked "
                                       f"from {tmp_path}); check the path. A Hugging Face hub id has the form "
                                       "'owner/name'\n")
    assert main(["finetune", "--dataset", "someone/guanaco-copy", "--out", "run"]) == 2  # a hub id, offline
    err = capsys.readouterr().err
    assert err.startswith("lora-lab: error: cannot load dataset 'someone/guanaco-copy' from the Hugging Face hub")
    assert err.count("lora-lab:") == 1


# ---- a run that stops: recorded as such, with how to go on ---------------------------------------------------

@pytest.mark.parametrize("error, status", [(KeyboardInterrupt(), "interrupted"), (RuntimeError("out of memory"), "failed")],
                         ids=["ctrl-c", "failure"])
def test_a_stopped_run_is_recorded_as_such_and_says_how_to_go_on(tmp_path, small_data, capsys, monkeypatch, error, status):
    import trl

    def stop(*a, **k):
        raise error
    monkeypatch.setattr(trl.SFTTrainer, "train", stop)
    out = tmp_path / "run"
    args = ["finetune", "--dataset", str(small_data), "--max-steps", "1", "--out", str(out), "--no-progress",
            "--max-new-tokens", "1", "--per-device-train-batch-size", "8"]
    if status == "interrupted":
        assert main(args) == 130
    else:
        with pytest.raises(RuntimeError, match="out of memory"):
            main(args)
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == status and "stopped" in record
    assert record["error"] == (None if status == "interrupted" else "RuntimeError: out of memory")
    said = capsys.readouterr().out
    assert (f"the run in {out} {'was interrupted' if status == 'interrupted' else 'failed'} and is recorded so in "
            "run.json; no checkpoint was saved yet, so the same command starts it again") in said
    monkeypatch.undo()
    assert main(args) == 0  # and it does
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_the_resume_hint_names_the_last_checkpoint(tmp_path, monkeypatch):
    said = []
    monkeypatch.setattr(finetune_module.runs, "checkpoints", lambda out: [(5, Path(out) / "checkpoints/checkpoint-5")])
    finetune_module._record_stop(tmp_path, KeyboardInterrupt(), said.append)
    assert said[0].endswith(f"continue from step 5 with: lora-lab finetune --out {tmp_path} --resume")
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "interrupted"
