"""lora_lab.config: every setting checked in one place (type, range, choice, unknown key), whatever its source."""

import dataclasses
import json
from pathlib import Path

import pytest

from lora_lab.config import (
    OPTIMIZERS,
    PROFILES,
    RULES,
    SCHEDULERS,
    ConfigError,
    FinetuneConfig,
    check_settings,
    read_settings_file,
    resolve_config,
)

# one bad value per field and kind of mistake: (key, value, words the error must hold besides key=value)
BAD = [
    ("profile", "llama2", "one of ('tiny', 'llama2-7b-t4', 'llama2-70b-fsdp')"),
    ("model", "", "a local folder or file, or a Hugging Face hub id"),
    ("model", 7, "hub id"),
    ("dataset", ["a.jsonl"], "hub id"),
    ("quantization", "int8", "one of ('nf4', 'fp4', 'none')"),
    ("quantization", None, "one of"),
    ("double_quant", "true", "true or false (a boolean); text is not read as a boolean"),
    ("double_quant", 1, "true or false"),
    ("precision", "fp8", "one of ('auto', 'fp32', 'fp16', 'bf16')"),
    ("sharding", "zero3", "one of ('auto', 'none', 'ddp', 'fsdp')"),
    ("num_processes", 0, "an integer >= 1, or null (as launched)"),
    ("num_processes", "two", "an integer >= 1"),
    ("quant_storage", "int8", "one of ('auto', 'uint8', 'float16', 'bfloat16', 'float32')"),
    ("lora_r", 0, "an integer >= 1"),
    ("lora_r", 8.0, "an integer >= 1, not a float"),
    ("lora_r", "8.0", "an integer >= 1"),
    ("lora_r", True, "not a bool"),
    ("lora_alpha", "-16", "a number > 0"),
    ("lora_alpha", [16], "a number > 0, not a list"),
    ("lora_dropout", 1.0, "a number in [0, 1)"),
    ("lora_dropout", "nan", "a number in [0, 1)"),
    ("target_modules", [], "a non-empty list of module names"),
    ("target_modules", ["all-linear"], "'all-linear' stands alone"),
    ("target_modules", ["q_proj", ""], "a non-empty list"),
    ("target_modules", "q_proj(", "is not a valid regular expression"),
    ("target_modules", 3, "'all-linear'"),
    ("learning_rate", "fast", "a number > 0"),
    ("learning_rate", 0, "a number > 0"),
    ("learning_rate", "inf", "a number > 0"),
    ("max_steps", 0, "an integer >= 1, or -1"),
    ("max_steps", -2, "or -1"),
    ("num_train_epochs", None, "a number > 0, not a NoneType"),
    ("per_device_train_batch_size", "32 rows", "an integer >= 1"),
    ("gradient_accumulation_steps", 0, "an integer >= 1"),
    ("max_grad_norm", -0.3, "a number >= 0 (0: no clipping)"),
    ("warmup_ratio", 3, "a number in [0, 1)"),
    ("lr_scheduler_type", "cosin", "one of ('linear', 'cosine'"),
    ("weight_decay", -0.1, "a number >= 0"),
    ("optim", "adam", "one of ('auto', 'adamw_torch'"),
    ("max_length", "long", "an integer >= 1"),
    ("gradient_checkpointing", "yes", "true or false"),
    ("group_by_length", None, "true or false"),
    ("completion_only_loss", 0, "true or false"),
    ("logging_steps", 0.5, "an integer >= 1"),
    ("save_steps", -1, "an integer >= 0 (0: no checkpoints)"),
    ("save_total_limit", 0, "an integer >= 1"),
    ("seed", -1, "an integer in [0, 2**32)"),
    ("seed", 2**32, "an integer in [0, 2**32)"),
    ("max_new_tokens", 0, "an integer >= 1"),
    ("sample_prompts", "How are you?", "a single string is never split: put it in a list"),
    ("sample_prompts", [], "a non-empty list of non-empty strings"),
]


def test_every_field_has_a_check_and_every_bad_kind_a_case():
    assert set(RULES) == {f.name for f in dataclasses.fields(FinetuneConfig)}
    assert {key for key, _, _ in BAD} == set(RULES)


@pytest.mark.parametrize("key, value, words", BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_a_bad_value_names_key_value_and_what_is_accepted_from_every_entry_point(key, value, words):
    sources = [lambda: resolve_config("tiny", **{key: value}),          # Python keyword arguments
               lambda: resolve_config("tiny", {key: value}),            # a dict, as read from a file
               lambda: FinetuneConfig(**{key: value}),                  # the dataclass built by hand
               lambda: dataclasses.replace(FinetuneConfig(), **{key: value})]
    if key == "profile":
        sources = [lambda: resolve_config(value), lambda: FinetuneConfig(profile=value)]
    for source in sources:
        with pytest.raises(ConfigError) as err:
            source()
        assert f"{key}={value!r} is not accepted" in str(err.value) and words in str(err.value), str(err.value)


def test_numbers_written_as_text_are_read_exactly_and_reported():
    values, coerced = check_settings({"learning_rate": "2e-4", "lora_r": " 8", "max_steps": "-1",
                                      "lora_alpha": 16, "double_quant": False})
    assert values == {"learning_rate": 2e-4, "lora_r": 8, "max_steps": -1, "lora_alpha": 16, "double_quant": False}
    assert type(values["lora_r"]) is int and type(values["learning_rate"]) is float
    assert coerced == {"learning_rate": "2e-4", "lora_r": " 8", "max_steps": "-1"}  # only the text ones
    config = resolve_config("tiny", learning_rate="1e-3")
    assert config.learning_rate == 1e-3 and config == resolve_config("tiny", learning_rate=1e-3)


def test_several_bad_values_are_reported_together_and_unknown_keys_get_a_hint():
    with pytest.raises(ConfigError) as err:
        resolve_config("tiny", lora_rank=8, learning_rate="fast", seed=-1)
    lines = str(err.value).splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("unknown config key 'lora_rank'; did you mean 'lora_r'? Known keys: profile, model")
    assert lines[1].startswith("learning_rate='fast'") and lines[2].startswith("seed=-1")


def test_profile_given_twice_must_agree_and_overrides_must_be_a_dict():
    assert resolve_config("tiny", {"profile": "tiny", "lora_r": 4}).lora_r == 4
    with pytest.raises(ConfigError, match="profile='llama2-7b-t4' in the settings disagrees with profile='tiny'"):
        resolve_config("tiny", {"profile": "llama2-7b-t4"})
    with pytest.raises(ConfigError, match=r"overrides=\['lora_r', 4\] is not accepted"):
        resolve_config("tiny", ["lora_r", 4])


def test_every_profile_passes_its_own_check():
    for name, values in PROFILES.items():
        config = resolve_config(name)
        assert check_settings(dataclasses.asdict(config)) == (dataclasses.asdict(config), {})
        assert all(getattr(config, k) == v for k, v in values.items())


def test_target_modules_forms():
    assert resolve_config("tiny", target_modules="all-linear").target_modules == "all-linear"  # never split
    assert resolve_config("tiny", target_modules=r".*\.(q|v)_proj").target_modules == r".*\.(q|v)_proj"
    assert resolve_config("tiny", target_modules=("q_proj", "v_proj")).target_modules == ["q_proj", "v_proj"]
    assert resolve_config("tiny", target_modules={"v_proj", "q_proj"}).target_modules == ["q_proj", "v_proj"]


def test_paths_become_text_and_none_means_the_embedded_default():
    config = resolve_config("tiny", model=Path("some/folder"), dataset=None)
    assert config.model == "some/folder" and config.dataset is None


def test_a_config_changed_after_it_was_built_is_checked_again():
    config = resolve_config("tiny")
    config.lora_r = "eight"
    with pytest.raises(ConfigError, match="lora_r='eight'"):
        config.validate()


def test_choice_lists_are_the_installed_transformers_own():
    from transformers.trainer_utils import SchedulerType
    from transformers.training_args import OptimizerNames

    assert set(SCHEDULERS) == {s.value for s in SchedulerType}
    assert set(OPTIMIZERS) == {o.value for o in OptimizerNames}


# ----------------------------------------------------------------------------- settings files


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_json_and_yaml_files_read_the_same_settings(tmp_path):
    js = write(tmp_path, "s.json", json.dumps({"learning_rate": 2e-4, "target_modules": "all-linear",
                                               "double_quant": False, "model": None}))
    # PyYAML reads 2e-4 (no dot) as text: the check reads it back as the number, and says so
    ym = write(tmp_path, "s.yml", "learning_rate: 2e-4\ntarget_modules: all-linear\ndouble_quant: no\nmodel: ~\n")
    from_json, from_yaml = read_settings_file(js), read_settings_file(ym)
    assert from_yaml["learning_rate"] == "2e-4"
    assert check_settings(from_json) == (from_json, {})
    assert check_settings(from_yaml) == (from_json, {"learning_rate": "2e-4"})
    assert read_settings_file(write(tmp_path, "s.yaml", "target_modules: [q_proj, v_proj]\n")) == {
        "target_modules": ["q_proj", "v_proj"]}


@pytest.mark.parametrize("name, text, words", [
    ("d.json", '{"lora_r": 4, "lora_r": 8}', "key 'lora_r' is given twice"),
    ("d.yaml", "lora_r: 4\nlora_r: 8\n", "key 'lora_r' is given twice"),
    ("l.json", '["lora_r", 4]', "expected a mapping of settings (key: value), got list"),
    ("e.yaml", "", "expected a mapping of settings (key: value), got NoneType"),
    ("b.json", '{"lora_r": 4,', "not valid JSON"),
    ("b.yaml", "lora_r: [4\n", "not valid YAML"),
    ("s.toml", "lora_r = 4", "a settings file is JSON (.json) or YAML (.yaml, .yml)"),
])
def test_a_file_that_is_not_a_mapping_of_settings_is_named(tmp_path, name, text, words):
    path = write(tmp_path, name, text)
    with pytest.raises(ConfigError) as err:
        read_settings_file(path)
    assert str(err.value).startswith(f"{path}: ") and words in str(err.value)


# settings that must agree with one another: (settings, words of the one error), refused by every entry point
CLASHES = [
    (dict(sharding="fsdp", num_processes=1), "FSDP on one process shards nothing"),
    (dict(sharding="ddp", num_processes=1), "DDP on one process copies nothing"),
    (dict(sharding="none", num_processes=2), "sharding='none' with num_processes=2"),
    (dict(sharding="fsdp", num_processes=2, quant_storage="uint8"), "accelerate leaves 4-bit weights stored as integers"),
    (dict(quantization="none", quant_storage="bfloat16"), "there are no 4-bit codes to store"),
]


@pytest.mark.parametrize("settings, words", CLASHES, ids=[str(s) for s, _ in CLASHES])
def test_settings_that_clash_are_refused_together_by_every_entry_point(settings, words):
    for source in (lambda: resolve_config("tiny", **settings), lambda: FinetuneConfig(**settings),
                   lambda: dataclasses.replace(FinetuneConfig(), **settings)):
        with pytest.raises(ConfigError, match=words):
            source()


def test_parallel_settings_that_agree_are_kept_and_null_means_as_launched():
    config = resolve_config("tiny", {"sharding": "fsdp", "num_processes": "2", "quant_storage": "float32"})
    assert (config.sharding, config.num_processes, config.quant_storage) == ("fsdp", 2, "float32")
    assert resolve_config("tiny", num_processes="null").num_processes is None
    big = resolve_config("llama2-70b-fsdp")
    assert (big.sharding, big.num_processes, big.per_device_train_batch_size) == ("fsdp", 2, 1)
