"""Adapter files in PEFT's format (adapter_config.json + adapter_model.safetensors), read with safetensors only."""

import dataclasses
import json
import os

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from .lora import LoraConfig, _set_submodule, inject_lora, lora_layers

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PREFIX = "base_model.model."  # PEFT's saved keys = this prefix + the name inside the plain model
# PEFT options that change what an adapter means; lora_lab loads an adapter only when each is off
UNSUPPORTED = {"use_dora": False, "rank_pattern": {}, "alpha_pattern": {}, "modules_to_save": None,
               "layers_to_transform": None, "exclude_modules": None, "target_parameters": None,
               "lora_bias": False, "layer_replication": None, "trainable_token_indices": None,
               "use_qalora": False, "alora_invocation_tokens": None}


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an adapter file holds, under PEFT's key names: every lora_A/lora_B, plus biases if they train."""
    config = _config_of(model)
    tensors = {}
    for name, layer in lora_layers(model):
        tensors[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight  # (r, in_features)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight  # (out_features, r)
        if config.bias == "lora_only" and getattr(layer.base_layer, "bias", None) is not None:
            tensors[f"{PREFIX}{name}.base_layer.bias"] = layer.base_layer.bias
    if config.bias == "all":
        tensors.update({PREFIX + n: p for n, p in model.named_parameters() if "bias" in n})
    return tensors


def _config_of(model: nn.Module) -> LoraConfig:
    config = getattr(model, "lora_config", None)
    if not isinstance(config, LoraConfig) or not lora_layers(model):
        raise ValueError(f"model={type(model).__name__} has no LoRA layers from inject_lora or load_adapter")
    return config


def save_adapter(model: nn.Module, path: str | os.PathLike, overwrite: bool = False) -> None:
    """Write the model's LoRA weights and config to folder `path`, loadable by peft.PeftModel.from_pretrained.

    An adapter already in `path` is refused (FileExistsError) unless overwrite=True. Each file is
    written under a temporary name and renamed into place, weights first and the config last, so a
    crash never leaves a file that loads as if complete.
    """
    config, layers = _config_of(model), lora_layers(model)
    there = [name for name in (CONFIG_NAME, WEIGHTS_NAME) if os.path.exists(os.path.join(path, name))]
    if there and not overwrite:
        raise FileExistsError(f"path={str(path)!r} already holds an adapter ({', '.join(there)}); nothing was "
                              "written. Choose another folder, or pass overwrite=True to replace it")
    target_modules = config.target_modules
    if target_modules == "all-linear":  # PEFT saves the resolved names too
        target_modules = [name for name, _ in layers]
    name_or_path = getattr(getattr(model, "config", None), "name_or_path", None)
    peft_config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": name_or_path or None,
        "r": config.r,
        "lora_alpha": config.lora_alpha,
        "lora_dropout": config.lora_dropout,
        "target_modules": sorted(target_modules) if isinstance(target_modules, list) else target_modules,
        "bias": config.bias,
        "fan_in_fan_out": any(layer.fan_in_fan_out for _, layer in layers),
        "init_lora_weights": True if config.init_lora_weights == "kaiming" else config.init_lora_weights,
        "use_rslora": config.use_rslora,
        "inference_mode": True,
    }
    os.makedirs(path, exist_ok=True)
    if CONFIG_NAME in there:  # the old config goes first: a crash below leaves no adapter that looks complete
        os.remove(os.path.join(path, CONFIG_NAME))
    tensors = {k: v.detach().contiguous() for k, v in adapter_state_dict(model).items()}
    _write_then_rename(os.path.join(path, WEIGHTS_NAME), save(tensors, metadata={"format": "pt"}))
    _write_then_rename(os.path.join(path, CONFIG_NAME), json.dumps(peft_config, indent=2).encode())


def _write_then_rename(file: str, data: bytes) -> None:
    tmp = os.path.join(os.path.dirname(file), f".{os.path.basename(file)}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)


def read_adapter_config(path: str | os.PathLike) -> LoraConfig:
    """The LoraConfig stored in an adapter folder written by save_adapter or PEFT's save_pretrained."""
    file = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(file):
        raise ValueError(f"path={str(path)!r} has no {CONFIG_NAME}; an adapter folder holds {CONFIG_NAME} and "
                         f"{WEIGHTS_NAME} (from save_adapter or PEFT's save_pretrained)")
    try:
        with open(file) as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file!r} is not valid JSON ({e}); expected PEFT's adapter_config.json") from e
    if not isinstance(raw, dict) or raw.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{file!r} has peft_type={raw.get('peft_type') if isinstance(raw, dict) else raw!r}; "
                         "lora_lab loads peft_type 'LORA' only")
    for key, off in UNSUPPORTED.items():
        value = raw.get(key)
        if not (value is None or value is False or value == {} or value == []):
            raise ValueError(f"{file!r} sets {key}={raw[key]!r}; lora_lab loads plain LoRA, with {key} left at {off!r}")
    init = raw.get("init_lora_weights", True)
    if init not in (True, False, "gaussian"):  # pissa, olora, loftq, ... rewrite the base weights
        raise ValueError(f"{file!r} sets init_lora_weights={init!r}; accepted: True, False, 'gaussian'")
    return LoraConfig(r=raw.get("r", 8), lora_alpha=raw.get("lora_alpha", 8), lora_dropout=raw.get("lora_dropout", 0.0),
                      target_modules=raw.get("target_modules") or ["q_proj", "v_proj"], bias=raw.get("bias", "none"),
                      init_lora_weights="kaiming" if init is True else init, use_rslora=raw.get("use_rslora", False),
                      fan_in_fan_out=raw.get("fan_in_fan_out", False))


def read_adapter_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of adapter_model.safetensors (safetensors only: a pickled adapter_model.bin is refused)."""
    file = os.path.join(path, WEIGHTS_NAME)
    if not os.path.isfile(file):
        hint = " (found adapter_model.bin, a pickle: re-save it with safetensors)" if os.path.isfile(
            os.path.join(path, "adapter_model.bin")) else ""
        raise ValueError(f"path={str(path)!r} has no {WEIGHTS_NAME}{hint}")
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{file!r} is not a readable safetensors file ({e}); it may be truncated or corrupt") from e


def load_adapter(base_model: nn.Module, path: str | os.PathLike, is_trainable: bool = False) -> nn.Module:
    """Inject LoRA into `base_model` as the adapter's config says, load its weights, return the model."""
    config, tensors = read_adapter_config(path), read_adapter_weights(path)
    tensors = {k.removeprefix(PREFIX): v for k, v in tensors.items()}
    flags = {n: p.requires_grad for n, p in base_model.named_parameters()}
    model = inject_lora(base_model, dataclasses.replace(config, init_lora_weights=False))  # weights come from the file
    try:
        _load_tensors(model, tensors, path, config.r)
    except ValueError:  # leave the caller's model as it was
        for name, layer in lora_layers(model):
            _set_submodule(model, name, layer.base_layer)
        del model.lora_config
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        raise
    model.lora_config = config
    if not is_trainable:  # PEFT's from_pretrained default: frozen adapter, eval mode (dropout off)
        model.requires_grad_(False).eval()
    return model


def _load_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], path, r: int) -> None:
    expected = {k.removeprefix(PREFIX): v for k, v in adapter_state_dict(model).items()}
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"adapter at {str(path)!r} does not fit {type(model).__name__}: "
                         f"{len(missing)} LoRA weights missing from the file (e.g. {missing[:3]}), "
                         f"{len(unexpected)} in the file with no such module (e.g. {unexpected[:3]})")
    for key, param in expected.items():
        t = tensors[key]
        if key.endswith("lora_A.weight") and t.shape[0] != r:
            raise ValueError(f"adapter at {str(path)!r}: {key} has rank {t.shape[0]} but its config says r={r}")
        if t.shape != param.shape:
            raise ValueError(f"adapter at {str(path)!r}: {key} has shape {tuple(t.shape)}, "
                             f"the model needs {tuple(param.shape)}")
    with torch.no_grad():
        for key, param in expected.items():
            param.copy_(tensors[key])
