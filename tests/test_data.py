"""The embedded instruction data: guanaco-llama2-1k's schema, disjoint splits, clear errors."""

import json

import pytest

from lora_lab import load_instruction_dataset
from lora_lab.build_tiny import build_dataset
from lora_lab.data import EMBEDDED_DATASET, HUB_DATASET
from lora_lab.hub import HubUnavailableError
from lora_lab.tasks import TASKS, make_splits, parse_llama2, score_answer, task_of


def test_embedded_splits_have_guanaco_schema_and_sizes():
    train = load_instruction_dataset()
    evals = load_instruction_dataset(split="eval")
    assert train.column_names == ["text"] and evals.column_names == ["text"]
    assert len(train) >= 1000 and len(evals) >= 200
    for row in list(train.select(range(50))) + list(evals.select(range(50))):
        assert row["text"].startswith("<s>[INST] ") and row["text"].endswith(" </s>")
        assert " [/INST] " in row["text"]


def test_eval_prompts_never_occur_in_training():
    train = {parse_llama2(t)[0] for t in load_instruction_dataset()["text"]}
    evals = [parse_llama2(t)[0] for t in load_instruction_dataset(split="eval")["text"]]
    assert not train & set(evals)


def test_every_task_is_represented_equally():
    evals = [task_of(parse_llama2(t)[0]) for t in load_instruction_dataset(split="eval")["text"]]
    counts = {t: evals.count(t) for t in TASKS}
    assert len(set(counts.values())) == 1 and "other" not in evals


def test_committed_data_is_what_the_script_generates(tmp_path):
    build_dataset(tmp_path)
    for split in ("train", "eval"):
        assert (tmp_path / f"{split}.jsonl").read_bytes() == (EMBEDDED_DATASET / f"{split}.jsonl").read_bytes()


def test_answers_are_right():
    train, _ = make_splits(n_train=200, n_eval=50, seed=3)
    for ex in train:
        if ex.task == "larger":
            a, b = map(int, ex.prompt.removeprefix("Which number is larger: ").rstrip("?").split(" or "))
            assert ex.answer == str(max(a, b))
        if ex.task == "count":
            assert ex.answer == str(len(ex.prompt.split(": ")[1].split(", ")))


def test_scorer_is_exact_up_to_case_and_full_stop():
    assert score_answer(" Positive. ", "positive")
    assert not score_answer("positive, I think", "positive")
    assert not score_answer("", "4")


def test_row_without_text_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": "<s>[INST] a [/INST] b </s>"}) + "\n"
                                          + json.dumps({"prompt": "hi"}) + "\n")
    with pytest.raises(ValueError, match=r"row 1 has no 'text' field.*prompt"):
        load_instruction_dataset(tmp_path)


def test_row_not_in_inst_format_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text(json.dumps({"text": "### Human: hi ### Assistant: yo"}) + "\n")
    with pytest.raises(ValueError, match=r"row 0: .*not in Llama-2 chat format"):
        load_instruction_dataset(tmp_path)


def test_malformed_json_line_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text('{"text": "<s>[INST] a [/INST] b </s>"}\n{"text": oops}\n')
    with pytest.raises(ValueError, match="line 2 is not valid JSON"):
        load_instruction_dataset(tmp_path)


def test_unknown_split_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="split='test'"):
        load_instruction_dataset(split="test")
    with pytest.raises(FileNotFoundError, match="has no eval.jsonl"):
        load_instruction_dataset(tmp_path, split="eval")


def test_hub_dataset_offline_fails_at_once_with_advice(monkeypatch):
    import time

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    t0 = time.time()
    with pytest.raises(HubUnavailableError, match=r"mlabonne/guanaco-llama2-1k.*load_instruction_dataset\(\) with no argument"):
        load_instruction_dataset(HUB_DATASET)
    assert time.time() - t0 < 5
