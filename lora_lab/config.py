"""A fine-tune's settings: `FinetuneConfig`, its profiles, and the one check every entry point goes through.

Command-line flags, `--config` files (JSON or YAML), `resolve_config(...)` keyword arguments, the
profiles and a `FinetuneConfig` built by hand all pass through `check_setting`, field by field, before
anything loads: a bad value raises `ConfigError` naming the key, the value and what is accepted.

Numbers written as text ("2e-4", "8") are read the way the command line reads its flags, with
Python's `float()` and `int()`: exactly, and only when the whole text is one finite number of the
field's kind ("8.0" is not an integer). `check_settings` reports each such reading and
`lora-lab finetune --print-config` shows them. Nothing else is converted: booleans, lists and
choices must be given as themselves, and a string is never split into a list.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import numbers
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .data import HUB_DATASET
from .lora import ALL_LINEAR
from .memory import LLAMA_PROJECTIONS, SHARDINGS
from .models import HUB_MODEL, HUB_MODEL_70B

QUANTIZATIONS = ("nf4", "fp4", "none")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
QUANT_STORAGES = ("auto", "uint8", "float16", "bfloat16", "float32")  # bitsandbytes' bnb_4bit_quant_storage
# transformers 5.24's SchedulerType and OptimizerNames values, listed so the check needs no slow import
# (tests/test_config.py checks them against the installed transformers)
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
              "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
              "warmup_stable_decay", "greedy")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_torch_xla", "adamw_torch_npu_fused", "adafactor",
              "adamw_anyprecision", "adamw_torch_4bit", "adamw_torch_8bit", "ademamix", "sgd", "adagrad",
              "adamw_bnb_8bit", "adamw_8bit", "ademamix_8bit", "lion_8bit", "lion_32bit", "paged_adamw_32bit",
              "paged_adamw_8bit", "paged_ademamix_32bit", "paged_ademamix_8bit", "paged_lion_32bit", "paged_lion_8bit",
              "rmsprop", "rmsprop_bnb", "rmsprop_bnb_8bit", "rmsprop_bnb_32bit", "galore_adamw", "galore_adamw_8bit",
              "galore_adafactor", "galore_adamw_layerwise", "galore_adamw_8bit_layerwise", "galore_adafactor_layerwise",
              "lomo", "adalomo", "grokadamw", "schedule_free_radam", "schedule_free_adamw", "schedule_free_sgd",
              "apollo_adamw", "apollo_adamw_layerwise", "stable_adamw")


@dataclass
class FinetuneConfig:
    profile: str = "tiny"               # which PROFILES entry these values started from
    model: str | None = None            # None: the embedded tiny Llama; else a hub id or a local folder
    dataset: str | None = None          # None: the embedded instructions; else a hub id, folder or .jsonl file
    # 4-bit base (bitsandbytes' names in BitsAndBytesConfig: bnb_4bit_quant_type, bnb_4bit_use_double_quant)
    quantization: str = "nf4"           # "nf4" (QLoRA), "fp4", or "none" (LoRA over a 16/32-bit base)
    double_quant: bool = True           # 8-bit block scales: 4.127 instead of 4.5 bits per weight
    precision: str = "auto"             # compute dtype; auto: fp32 on a CPU, bf16 where the GPU has it, else fp16
    # several processes (accelerate launch): how they share the model
    sharding: str = "auto"              # "none", "ddp" (each holds a whole copy), "fsdp" (each holds 1/N); auto: as launched
    num_processes: int | None = None    # None: as launched (1 for `lora-lab estimate`); given, it must match the launch
    quant_storage: str = "auto"         # dtype the packed 4-bit codes are stored in; auto: uint8, or the compute dtype under FSDP
    # LoRA (PEFT's names)
    lora_r: int = 16                    # rank of each update B·A
    lora_alpha: float = 32              # updates scaled by lora_alpha / lora_r
    lora_dropout: float = 0.0           # dropout on the adapter's input
    # a list of module names, "all-linear" (every linear layer but the output head), or a regex over full names
    target_modules: list[str] | str = field(default_factory=lambda: list(LLAMA_PROJECTIONS))  # all seven, as QLoRA does
    # training (transformers' TrainingArguments names)
    learning_rate: float = 2e-3         # LoRA on a tiny model takes a large one
    max_steps: int = 300                # optimizer steps; -1: num_train_epochs decides
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0          # gradient clipping; 0: none
    warmup_ratio: float = 0.05          # share of the steps spent warming the learning rate up
    lr_scheduler_type: str = "cosine"   # after the warmup, decay to zero
    weight_decay: float = 0.0
    optim: str = "auto"                 # auto: paged_adamw_32bit on a GPU, adamw_torch on a CPU
    max_length: int = 128               # tokens per row; longer rows are cut
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    group_by_length: bool = False       # batch rows of similar length: less padding
    completion_only_loss: bool = True   # loss on the answer tokens only (QLoRA trains on targets only)
    logging_steps: int = 10
    save_steps: int = 100               # a checkpoint every this many steps (0: none); --resume continues from the last
    save_total_limit: int = 2           # checkpoints kept, the newest; older ones are deleted
    seed: int = 0
    # measuring before and after
    max_new_tokens: int = 8             # per generated answer
    sample_prompts: list[str] = field(default_factory=lambda: ["How do I use the OpenAI API?"])  # scored by eye where no held-out split exists

    def __post_init__(self):
        self.validate()

    def validate(self) -> "FinetuneConfig":
        """Check every field (in place: numbers given as text become numbers, paths text), then the fields that
        must agree with one another (check_together); raise ConfigError."""
        values, _ = check_settings(dataclasses.asdict(self))
        for key, value in values.items():
            setattr(self, key, value)
        check_together(self)
        return self


PROFILES: dict[str, dict] = {
    "tiny": {},  # the dataclass defaults
    # The classic Colab recipe (Llama-2-7b-chat on guanaco-llama2-1k, one epoch of 250 steps on a T4),
    # with QLoRA's own settings where the recipe fell short: NF4 with double quantization, all seven projections.
    "llama2-7b-t4": dict(
        model=HUB_MODEL, dataset=HUB_DATASET, quantization="nf4", double_quant=True,
        lora_r=64, lora_alpha=16, lora_dropout=0.1, learning_rate=2e-4, max_steps=-1, num_train_epochs=1.0,
        per_device_train_batch_size=4, max_grad_norm=0.3, warmup_ratio=0.03, weight_decay=0.001,
        lr_scheduler_type="constant_with_warmup",  # the recipe's "constant" silently skips its own warmup
        max_length=1024, gradient_checkpointing=True, group_by_length=True, logging_steps=25, max_new_tokens=200,
        save_steps=25,  # the recipe's own: a Colab disconnect costs at most 25 steps (about 2.5 minutes on a T4)
    ),
    # Llama-2-70b-chat over two 24 GiB GPUs, fully sharded with a 4-bit base (FSDP-QLoRA, Answer.AI 2024): the 7B
    # recipe with rank 16, one row of 1,024 tokens per device and step, and the 4-bit codes stored in the compute
    # dtype so that FSDP shards them. `lora-lab estimate --profile llama2-70b-fsdp` shows why it needs both GPUs.
    "llama2-70b-fsdp": dict(
        model=HUB_MODEL_70B, dataset=HUB_DATASET, quantization="nf4", double_quant=True, sharding="fsdp",
        num_processes=2, lora_r=16, lora_alpha=16, lora_dropout=0.1, learning_rate=2e-4, max_steps=-1,
        num_train_epochs=1.0, per_device_train_batch_size=1, gradient_accumulation_steps=4, max_grad_norm=0.3,
        warmup_ratio=0.03, weight_decay=0.001, lr_scheduler_type="constant_with_warmup", max_length=1024,
        gradient_checkpointing=True, group_by_length=True, logging_steps=25, max_new_tokens=200, save_steps=25,
    ),
}


class ConfigError(ValueError):
    """A setting that is unknown, of the wrong type, out of range or not one of its choices."""


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(FinetuneConfig)]


# ----------------------------------------------------------------------------- one check per field


def _refuse(key, value, accepted: str, hint: str = ""):
    raise ConfigError(f"{key}={value!r} is not accepted; {key} takes {accepted}{hint}")


def _number(kind: type, accepted: str, ok):
    """A checker for an int or float field: a number of that kind (not a bool) for which ok(x) holds."""
    def check(key, given):
        value = given
        if isinstance(given, str):  # text is read as the command line reads a flag, or refused
            try:
                value = kind(given.strip())
            except ValueError:
                _refuse(key, given, accepted)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral if kind is int else numbers.Real):
            _refuse(key, given, accepted, f", not a {type(value).__name__}")
        if kind is int or not isinstance(value, (int, float)):  # numpy and other number types: plain Python
            value = kind(value)
        if not (math.isfinite(value) and ok(value)):
            _refuse(key, given, accepted)
        return value
    check.reads_text = True
    return check


def _optional(check):
    """A checker that takes None (the setting's "as it comes" value) or what `check` takes."""
    def optional(key, value):
        if value is None or isinstance(value, str) and value.strip().lower() in ("none", "null"):
            return None
        return check(key, value)
    optional.reads_text = getattr(check, "reads_text", False)
    return optional


def _boolean(key, value):
    if not isinstance(value, bool):
        _refuse(key, value, "true or false (a boolean)", "" if not isinstance(value, str) else
                "; text is not read as a boolean (on the command line use --flag / --no-flag)")
    return value


def _choice(choices: tuple):
    def check(key, value):
        if not (isinstance(value, str) and value in choices):
            _refuse(key, value, f"one of {choices}")
        return value
    return check


def _optional_path(key, value):
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        _refuse(key, value, "null (the embedded default), a local folder or file, or a Hugging Face hub id")
    return str(value)


def _texts(key, value):
    accepted = "a non-empty list of non-empty strings"
    if isinstance(value, str):
        _refuse(key, value, accepted, "; a single string is never split: put it in a list")
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        _refuse(key, value, accepted)
    return list(value)


def check_target_modules(key, value):
    """target_modules as a list of names, "all-linear", or a regex string; never a string split into letters."""
    accepted = (f"a non-empty list of module names (e.g. ['q_proj', 'v_proj']), {ALL_LINEAR!r} (every linear "
                "layer but the output head), or one regular expression over full module names")
    if isinstance(value, (set, frozenset)):
        value = sorted(value)
    if isinstance(value, str):
        if not value.strip():
            _refuse(key, value, accepted)
        try:
            re.compile(value)
        except re.error as err:
            _refuse(key, value, accepted, f" ({value!r} is not a valid regular expression: {err})")
        return value
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        _refuse(key, value, accepted)
    if ALL_LINEAR in value:
        _refuse(key, value, accepted, f"; {ALL_LINEAR!r} stands alone, as a string, not inside a list")
    return list(value)


RULES = {
    "profile": _choice(tuple(PROFILES)),
    "model": _optional_path,
    "dataset": _optional_path,
    "quantization": _choice(QUANTIZATIONS),
    "double_quant": _boolean,
    "precision": _choice(PRECISIONS),
    "sharding": _choice(("auto",) + SHARDINGS),
    "num_processes": _optional(_number(int, "an integer >= 1, or null (as launched)", lambda x: x >= 1)),
    "quant_storage": _choice(QUANT_STORAGES),
    "lora_r": _number(int, "an integer >= 1", lambda x: x >= 1),
    "lora_alpha": _number(float, "a number > 0", lambda x: x > 0),
    "lora_dropout": _number(float, "a number in [0, 1)", lambda x: 0 <= x < 1),
    "target_modules": check_target_modules,
    "learning_rate": _number(float, "a number > 0", lambda x: x > 0),
    "max_steps": _number(int, "an integer >= 1, or -1 (num_train_epochs decides)", lambda x: x >= 1 or x == -1),
    "num_train_epochs": _number(float, "a number > 0", lambda x: x > 0),
    "per_device_train_batch_size": _number(int, "an integer >= 1", lambda x: x >= 1),
    "gradient_accumulation_steps": _number(int, "an integer >= 1", lambda x: x >= 1),
    "max_grad_norm": _number(float, "a number >= 0 (0: no clipping)", lambda x: x >= 0),
    "warmup_ratio": _number(float, "a number in [0, 1)", lambda x: 0 <= x < 1),
    "lr_scheduler_type": _choice(SCHEDULERS),
    "weight_decay": _number(float, "a number >= 0", lambda x: x >= 0),
    "optim": _choice(("auto",) + OPTIMIZERS),
    "max_length": _number(int, "an integer >= 1", lambda x: x >= 1),
    "gradient_checkpointing": _boolean,
    "group_by_length": _boolean,
    "completion_only_loss": _boolean,
    "logging_steps": _number(int, "an integer >= 1", lambda x: x >= 1),
    "save_steps": _number(int, "an integer >= 0 (0: no checkpoints)", lambda x: x >= 0),
    "save_total_limit": _number(int, "an integer >= 1", lambda x: x >= 1),
    "seed": _number(int, "an integer in [0, 2**32)", lambda x: 0 <= x < 2**32),
    "max_new_tokens": _number(int, "an integer >= 1", lambda x: x >= 1),
    "sample_prompts": _texts,
}
_NUMBERS = {k for k, f in RULES.items() if getattr(f, "reads_text", False)}  # the fields that read text as a number


def check_setting(key: str, value):
    """The value of one setting, checked (and a number given as text read as one); ConfigError if not accepted."""
    if key not in RULES:
        keys = config_keys()
        near = difflib.get_close_matches(str(key), keys, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        raise ConfigError(f"unknown config key {key!r}{hint} Known keys: {', '.join(keys)}")
    return RULES[key](key, value)


def check_settings(values: dict) -> tuple[dict, dict]:
    """(checked values, {key: text read as a number}); one ConfigError listing every key that is not accepted."""
    if not isinstance(values, dict):
        raise ConfigError(f"settings must be a mapping of keys to values, got {type(values).__name__}: {values!r}")
    checked, coerced, errors = {}, {}, []
    for key, value in values.items():
        try:
            checked[key] = check_setting(key, value)
        except ConfigError as err:
            errors.append(str(err))
            continue
        if isinstance(value, str) and key in _NUMBERS:
            coerced[key] = value
    if errors:
        raise ConfigError("\n".join(errors))
    return checked, coerced


def resolve_config(profile: str = "tiny", overrides: dict | None = None, **kwargs) -> FinetuneConfig:
    """A profile's settings with `overrides` (and keyword arguments) on top, every value checked.

    Raises ConfigError (a ValueError) for an unknown key, a value of the wrong type or range, or a
    second, different `profile`; numbers given as text are read as numbers (see the module docstring).
    """
    check_setting("profile", profile)
    if overrides is not None and not isinstance(overrides, dict):
        raise ConfigError(f"overrides={overrides!r} is not accepted; overrides takes a dict of settings")
    overrides = {**(overrides or {}), **kwargs}
    if overrides.get("profile", profile) != profile:
        raise ConfigError(f"profile={overrides['profile']!r} in the settings disagrees with profile={profile!r}; "
                          "give the profile once")
    overrides.pop("profile", None)
    checked, _ = check_settings(overrides)
    return FinetuneConfig(**{**PROFILES[profile], **checked, "profile": profile})


def check_together(config: "FinetuneConfig") -> None:
    """The settings that must agree with one another, before anything loads; one ConfigError listing each clash.

    sharding against num_processes (FSDP or DDP on one process, one process asked to share with others),
    and quant_storage against sharding and quantization: under FSDP the 4-bit codes must be stored in a
    float dtype, because accelerate leaves integer-stored 4-bit weights out of the sharding (every device
    would hold all of them); the compute dtype is checked against it once the machine is known (plan.plan).
    """
    errors = []
    n, sharding = config.num_processes, config.sharding
    if sharding == "fsdp" and n == 1:
        errors.append("sharding='fsdp' with num_processes=1: FSDP on one process shards nothing; give num_processes "
                      ">= 2 (one per GPU) or sharding='none'")
    elif sharding == "ddp" and n == 1:
        errors.append("sharding='ddp' with num_processes=1: DDP on one process copies nothing; give num_processes >= 2 "
                      "or sharding='none'")
    elif sharding == "none" and n is not None and n > 1:
        errors.append(f"sharding='none' with num_processes={n}: several processes share the work as 'ddp' (each "
                      "holds a whole copy) or 'fsdp' (each holds 1/N); choose one")
    if config.quant_storage != "auto" and config.quantization == "none":
        errors.append(f"quant_storage={config.quant_storage!r} with quantization='none': there are no 4-bit codes to "
                      "store; leave quant_storage='auto'")
    elif config.quant_storage == "uint8" and sharding == "fsdp":
        errors.append("quant_storage='uint8' with sharding='fsdp': accelerate leaves 4-bit weights stored as integers "
                      "out of FSDP's sharding, so every device would hold all of them; store them in the compute "
                      "dtype (quant_storage='auto', or 'bfloat16' / 'float16' / 'float32' as the precision is)")
    if errors:
        raise ConfigError("\n".join(errors))


# ----------------------------------------------------------------------------- settings files


def _unique_keys(pairs):
    keys = [k for k, _ in pairs]
    twice = sorted({str(k) for k in keys if keys.count(k) > 1})
    if twice:  # json and yaml would keep the last value in silence
        raise ConfigError(f"key {twice[0]!r} is given twice; give each setting once")
    return dict(pairs)


def read_settings_file(path: str | os.PathLike) -> dict:
    """The mapping of settings in a .json, .yaml or .yml file, unchecked; ConfigError naming the file if it is not one.

    Duplicate keys are an error (both formats would keep the last one in silence). Values are checked
    by resolve_config / check_settings, as every other source of settings is.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ConfigError(f"{path}: a settings file is JSON (.json) or YAML (.yaml, .yml)")
    if not path.is_file():
        here = "" if path.is_absolute() else f" (looked from {Path.cwd()})"
        raise ConfigError(f"--config {str(path)!r}: no such settings file{here}")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(f"{path}: not UTF-8 text: line {line}, column {column} (byte 0x{data[err.start]:02x}); "
                          "save the file as UTF-8") from None
    try:
        if suffix == ".json":
            data = json.loads(text, object_pairs_hook=_unique_keys)
        else:
            import yaml

            class Loader(yaml.SafeLoader):
                pass

            def mapping(loader, node):
                loader.flatten_mapping(node)
                return _unique_keys(loader.construct_pairs(node, deep=True))

            Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
            data = yaml.load(text, Loader=Loader)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    except ValueError as err:  # json.JSONDecodeError
        raise ConfigError(f"{path}: not valid JSON ({err})") from None
    except Exception as err:  # yaml.YAMLError, raised only where PyYAML is imported
        if type(err).__module__.startswith("yaml"):
            raise ConfigError(f"{path}: not valid YAML ({err})") from None
        raise
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings (key: value), got {type(data).__name__}")
    return data
