"""Adapter files in PEFT's format (adapter_config.json + adapter_model.safetensors), for every kind the kit builds.

`save_adapter` and `load_adapter` read the model's `LoraConfig` (lora_lab.lora_config) and write or read
what that kind needs, as PEFT 0.21 does, so each file means on load what it meant on save:

    plain LoRA, rsLoRA   lora_A, lora_B (+ biases that train)
    DoRA                 + lora_magnitude_vector; use_dora: true
    PiSSA                init_lora_weights: "pissa": the loader redoes W0's SVD (PEFT's convention); with
                         convert_to_lora=True a plain LoRA of rank 2r that needs no SVD (PEFT's
                         path_initial_model_for_weight_conversion)
    LoftQ                init_lora_weights: "loftq" + loftq_config: the loader redoes LoftQ's quantization
                         of W0; save_base=True also writes the quantized base, as PEFT's LoftQ recipe does
    QA-LoRA              use_qalora: true, qalora_group_size: the loader quantizes W0 to INT4 again

Beyond PEFT: a fingerprint of the targeted weights (lora_lab.fingerprint) in the safetensors metadata,
checked on load. Loading onto the model it was already merged into is refused; onto other weights it
warns with the distance; a PiSSA adapter on a saved residual, or a LoftQ adapter on its saved base, is
recognised and loaded as such. Embeddings resized since the base was saved go into the file, as PEFT
saves them, and the loader resizes the model to match.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from . import fingerprint
from .lora import find_target_modules, inject_lora, lora_layers
from .lora_config import LoraConfig, from_adapter_config, to_adapter_config

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
BASE_FOLDER = "base_model"  # save_base=True: the weights the adapter sits on (LoftQ's Q), a transformers model folder
PREFIX = "base_model.model."  # PEFT's saved keys = this prefix + the name inside the plain model


def adapter_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The tensors an adapter file holds, under PEFT's key names: lora_A, lora_B, DoRA's lora_magnitude_vector,
    and the biases that train."""
    config = _config_of(model)
    tensors = {}
    for name, layer in lora_layers(model):
        tensors[f"{PREFIX}{name}.lora_A.weight"] = layer.lora_A.weight  # (r, in_features); QA-LoRA: (r, G)
        tensors[f"{PREFIX}{name}.lora_B.weight"] = layer.lora_B.weight  # (out_features, r)
        if isinstance(getattr(layer, "lora_magnitude_vector", None), torch.Tensor):
            tensors[f"{PREFIX}{name}.lora_magnitude_vector"] = layer.lora_magnitude_vector  # (out_features,)
        if config.bias == "lora_only" and getattr(layer.base_layer, "bias", None) is not None:
            tensors[f"{PREFIX}{name}.base_layer.bias"] = layer.base_layer.bias
    if config.bias == "all":
        tensors.update({PREFIX + n: p for n, p in model.named_parameters() if "bias" in n})
    return tensors


def _config_of(model: nn.Module) -> LoraConfig:
    config = getattr(model, "lora_config", None)
    if not isinstance(config, LoraConfig) or not lora_layers(model):
        raise ValueError(f"model={type(model).__name__} has no LoRA layers from inject_lora or load_adapter")
    from .variants import describe
    return describe(config, lora_layers(model))


def save_adapter(model: nn.Module, path: str | os.PathLike, overwrite: bool = False, convert_to_lora: bool = False,
                 save_base: bool = False) -> None:
    """Write the model's adapter (any kind: see the module docstring) to folder `path`, loadable by PEFT and lora_lab.

    convert_to_lora=True (PiSSA only) writes a plain LoRA of rank 2r that belongs on the original base.
    save_base=True also writes `path/base_model/`, a transformers model folder holding the weights the
    adapter sits on (LoftQ: its quantized weights; PiSSA: the residual). An adapter already in `path`
    is refused (FileExistsError) unless overwrite=True; convert_to_lora on another kind, save_base over
    4-bit layers outside the adapter, and a model without LoRA layers raise ValueError, all before
    anything is written. Each file is written under a temporary name and renamed into place, weights
    first and the config last, so a crash never leaves a file that loads as if complete.
    """
    _save(model, path, overwrite, convert_to_lora, None, save_base)


def _save(model, path, overwrite: bool, convert_to_lora: bool, initial: dict | None, save_base: bool) -> None:
    from . import variants

    config, layers = _config_of(model), lora_layers(model)
    there = [n for n in (CONFIG_NAME, WEIGHTS_NAME, BASE_FOLDER) if os.path.exists(os.path.join(path, n))]
    if there and not overwrite:
        raise FileExistsError(f"path={str(path)!r} already holds an adapter ({', '.join(there)}); nothing was "
                              "written. Choose another folder, or pass overwrite=True to replace it")
    tensors = adapter_state_dict(model)
    if convert_to_lora or initial is not None:
        if config.variant != "pissa" and initial is None:
            raise ValueError(f"convert_to_lora=True converts a PiSSA adapter (init_lora_weights='pissa'); this one is "
                             f"{config.variant!r} and already belongs on the base as it is")
        tensors = variants.to_plain_lora(model, PREFIX, initial)
        config = dataclasses.replace(config, r=2 * config.r, init_lora_weights="kaiming",
                                     lora_alpha=config.lora_alpha * (2**0.5 if config.use_rslora else 2))
    tensors.update(_resized_embeddings(model))
    base = variants.unwrapped_base(model) if save_base else None  # checked before anything is written
    target_modules = config.target_modules
    if target_modules == "all-linear":  # PEFT saves the resolved names too
        target_modules = [name for name, _ in layers]
    name_or_path = getattr(getattr(model, "config", None), "name_or_path", None)
    peft_config = to_adapter_config(config, target_modules, any(layer.fan_in_fan_out for _, layer in layers),
                                    name_or_path)
    meta = {"fingerprint": fingerprint.record(model, layers, config.variant in ("pissa", "loftq"))}
    if config.use_qalora:
        meta["qalora_dtype"] = str(layers[0][1].base_layer.scales.dtype).removeprefix("torch.")
    if config.variant == "loftq":
        meta["loftq_double_quant"] = getattr(layers[0][1].base_layer, "absmax2", None) is not None
    os.makedirs(path, exist_ok=True)
    if CONFIG_NAME in there:  # the old config goes first: a crash below leaves no adapter that looks complete
        os.remove(os.path.join(path, CONFIG_NAME))
    data = save({k: v.detach().contiguous() for k, v in tensors.items()},
                metadata={"format": "pt", fingerprint.KEY: fingerprint.dumps(meta)})
    _write_then_rename(os.path.join(path, WEIGHTS_NAME), data)
    if base is not None:
        base.save_pretrained(os.path.join(path, BASE_FOLDER))
    _write_then_rename(os.path.join(path, CONFIG_NAME), json.dumps(peft_config, indent=2).encode())


def _write_then_rename(file: str, data: bytes) -> None:
    tmp = os.path.join(os.path.dirname(file), f".{os.path.basename(file)}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, file)


# ----------------------------------------------------------------------------- embeddings resized since the base


def _embedding_names(model: nn.Module) -> tuple[str | None, str | None]:
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    names = {id(m): n for n, m in model.named_modules()}
    return names.get(id(emb)), (names.get(id(head)) if head is not None and head.weight is not emb.weight else None)


def _original_vocab(model: nn.Module) -> int | None:
    """vocab_size in the config.json of the folder or cached hub model the base was loaded from (PEFT's check)."""
    source = getattr(getattr(model, "config", None), "name_or_path", None)
    if not source:
        return None
    file = os.path.join(source, "config.json")
    if not os.path.isfile(file):
        from huggingface_hub import try_to_load_from_cache
        cached = try_to_load_from_cache(str(source), "config.json")
        file = cached if isinstance(cached, str) else None
    if file is None:
        warnings.warn(f"cannot read the config.json of {source!r} (not a folder here, not in the hub cache), so whether "
                      "the token embeddings were resized since is not checked", stacklevel=5)
        return None
    with open(file, encoding="utf-8") as f:
        raw = json.load(f)
    return raw.get("vocab_size", (raw.get("text_config") or {}).get("vocab_size"))


def _resized_embeddings(model: nn.Module) -> dict[str, torch.Tensor]:
    """The embedding (and untied output head) weights under PEFT's keys when their rows differ from the base's."""
    emb_name, head_name = _embedding_names(model)
    if emb_name is None:
        return {}
    rows, original = model.get_input_embeddings().weight.shape[0], _original_vocab(model)
    if original is None or original == rows:
        return {}
    if any(name in (emb_name, head_name) or name == "lm_head" for name, _ in lora_layers(model)):
        raise ValueError(f"the token embeddings were resized ({original} → {rows} rows) and an embedding or output "
                         "layer is a LoRA target; lora_lab saves resized embeddings only when LoRA leaves them alone")
    warnings.warn(f"the token embeddings were resized since the base was saved ({original} → {rows} rows): saving "
                  "them with the adapter, as PEFT does; load_adapter resizes the base to match", stacklevel=4)
    out = {f"{PREFIX}{emb_name}.weight": model.get_input_embeddings().weight}
    if head_name is not None:
        out[f"{PREFIX}{head_name}.weight"] = model.get_output_embeddings().weight
    return out


# ----------------------------------------------------------------------------- reading


def read_adapter_config(path: str | os.PathLike) -> LoraConfig:
    """The LoraConfig stored in an adapter folder written by save_adapter or PEFT's save_pretrained."""
    file = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(file):
        raise ValueError(f"path={str(path)!r} has no {CONFIG_NAME}; an adapter folder holds {CONFIG_NAME} and "
                         f"{WEIGHTS_NAME} (from save_adapter or PEFT's save_pretrained)")
    try:
        with open(file, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file!r} is not valid JSON ({e}); expected PEFT's adapter_config.json") from e
    return from_adapter_config(raw, file)


def _weights_file(path) -> str:
    file = os.path.join(path, WEIGHTS_NAME)
    if not os.path.isfile(file):
        hint = " (found adapter_model.bin, a pickle: re-save it with safetensors)" if os.path.isfile(
            os.path.join(path, "adapter_model.bin")) else ""
        raise ValueError(f"path={str(path)!r} has no {WEIGHTS_NAME}{hint}")
    return file


def read_adapter_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of adapter_model.safetensors (safetensors only: a pickled adapter_model.bin is refused)."""
    file = _weights_file(path)
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ValueError(f"{file!r} is not a readable safetensors file ({e}); it may be truncated or corrupt") from e


def read_adapter_metadata(path: str | os.PathLike) -> dict:
    """What lora_lab keeps in the weights file's metadata (the base's fingerprint, ...); {} for a file from PEFT."""
    try:
        with safe_open(_weights_file(path), "pt") as f:
            text = (f.metadata() or {}).get(fingerprint.KEY)
    except (SafetensorError, OSError, ValueError, RuntimeError):
        return {}
    try:
        return fingerprint.loads(text) if text else {}
    except (ValueError, TypeError):  # not lora_lab's: read as no fingerprint
        return {}


def _check_tensors(model, names, config: LoraConfig, tensors: dict, path) -> None:
    from .variants import expected_shapes

    expected = expected_shapes(model, names, config)
    missing, unexpected = sorted(expected.keys() - tensors.keys()), sorted(tensors.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"adapter at {str(path)!r} does not fit {type(model).__name__}: "
                         f"{len(missing)} LoRA weights missing from the file (e.g. {missing[:3]}), "
                         f"{len(unexpected)} in the file with no such module (e.g. {unexpected[:3]})")
    for key, shape in expected.items():
        t = tensors[key]
        if key.endswith("lora_A.weight") and t.shape[0] != config.r:
            raise ValueError(f"adapter at {str(path)!r}: {key} has rank {t.shape[0]} but its config says r={config.r}")
        if tuple(t.shape) != shape:
            raise ValueError(f"adapter at {str(path)!r}: {key} has shape {tuple(t.shape)}, the model needs {shape}")


def _plan(config: LoraConfig, verdict: str | None, distance: float, model, names, saved, path) -> LoraConfig:
    """The config to inject with: a PiSSA/LoftQ adapter redoes its init on W0, and sits as plain LoRA on its own base."""
    from . import base4bit

    plain = dataclasses.replace(config, init_lora_weights=False, loftq_config={})
    if verdict == "merged":
        raise ValueError(f"adapter at {str(path)!r} is already merged into this model: its targeted weights equal the "
                         "saved base plus this adapter's ΔW, so loading it would add ΔW a second time. Load it onto the "
                         "base before the merge (e.g. a fresh load_base_model()), or use the merged model as it is")
    four_bit = [n for n in names if base4bit.is_4bit(model.get_submodule(n))]
    if config.variant == "loftq" and four_bit and verdict != "variant":
        near = saved is not None and fingerprint.variant_distance(saved, model, names) < 0.25 * distance
        if not near:
            raise ValueError(f"adapter at {str(path)!r} is LoftQ's: it was trained on LoftQ's own 4-bit weights, and "
                             f"this base's 4-bit weights ({four_bit[0]!r}, ...) are not those" + (
                                 f" (they differ from the original by {distance:.1%})" if saved else "") +
                             ". Load it onto the original full-precision base (lora_lab redoes LoftQ's quantization), "
                             "or onto the base saved beside it with save_adapter(..., save_base=True)")
        warnings.warn(f"adapter at {str(path)!r}: this 4-bit base is close to, not equal to, the LoftQ weights the "
                      "adapter was trained on (other 4-bit settings, e.g. double quantization?)", stacklevel=3)
        return plain
    if verdict == "variant":  # PiSSA's residual, LoftQ's quantized weights: already what the adapter sits on
        return plain
    if verdict == "other":
        if distance != distance:  # nan: the targets or their shapes are not the saved ones
            how = "its targeted layers are not the ones it was saved with (other names or shapes)."
        else:
            how = (f"the targeted weights differ from the saved ones by {distance:.1%} (relative), " +
                   ("close to it: the same model at another precision or quantization?" if distance < 0.2
                    else "another model of the same shape?"))
        warnings.warn(f"adapter at {str(path)!r} was saved with another base: {how} Its outputs here will differ from "
                      "the saved model's; load it onto the base it was trained on to reproduce them", stacklevel=3)
    return config if config.variant in ("pissa", "loftq") else plain


def load_adapter(base_model: nn.Module, path: str | os.PathLike, is_trainable: bool = False) -> nn.Module:
    """Put the adapter in `path` (PEFT's or lora_lab's, any kind) on `base_model`, in place; return the model.

    Everything is checked before the model changes: the config (a misspelt key names the closest
    one), the tensors against the targets, and the base against the saved fingerprint (ValueError on
    the model the adapter was already merged into, a warning on other weights). is_trainable=False
    (PEFT's default) freezes the adapter and puts the model in eval mode.
    """
    from .variants import layer_class

    config, meta = read_adapter_config(path), read_adapter_metadata(path)
    tensors = {k.removeprefix(PREFIX): v for k, v in read_adapter_weights(path).items()}
    emb_name, head_name = _embedding_names(base_model)
    embeddings = {n: tensors.pop(f"{n}.weight") for n in (emb_name, head_name) if n and f"{n}.weight" in tensors}
    names = find_target_modules(base_model, config)
    _check_tensors(base_model, names, config, tensors, path)
    saved = meta.get("fingerprint")
    verdict, distance = fingerprint.compare(saved, base_model, names) if saved else (None, float("nan"))
    inject_config = _plan(config, verdict, distance, base_model, names, saved, path)
    rows = embeddings[emb_name].shape[0] if emb_name in embeddings else None
    if rows is not None and rows < base_model.get_input_embeddings().weight.shape[0]:
        raise ValueError(f"adapter at {str(path)!r} holds token embeddings of {rows} rows, fewer than this base's "
                         f"{base_model.get_input_embeddings().weight.shape[0]}; load it onto the base it was saved from")
    targets = [(n, base_model.get_submodule(n)) for n in names]
    dtype = getattr(torch, meta.get("qalora_dtype", "float16"))
    layer_cls = layer_class(inject_config, targets, qalora_dtype=dtype,
                            loftq_double_quant=bool(meta.get("loftq_double_quant", False)))
    model = inject_lora(base_model, inject_config, layer_cls=layer_cls)
    with torch.no_grad():
        for key, param in adapter_state_dict(model).items():
            param.copy_(tensors[key.removeprefix(PREFIX)])
    if rows is not None:
        _load_embeddings(model, embeddings, emb_name, head_name, rows)
    model.lora_config = config
    if saved and set(saved) == set(names):  # the base the adapter was made on, whatever it was loaded onto
        model.lora_base_fingerprint = {n: {k: saved[n][k] for k in ("shape", "index", "base")} for n in names}
    if not is_trainable:  # PEFT's from_pretrained default: frozen adapter, eval mode (dropout off)
        model.requires_grad_(False).eval()
    return model


def _load_embeddings(model, embeddings: dict, emb_name: str, head_name: str | None, rows: int) -> None:
    if rows != model.get_input_embeddings().weight.shape[0]:
        warnings.warn(f"resizing the model's token embeddings from {model.get_input_embeddings().weight.shape[0]} to "
                      f"{rows} rows, as saved with the adapter; use the tokenizer the adapter was trained with",
                      stacklevel=3)
        model.resize_token_embeddings(rows)
    for module in (model.get_input_embeddings(), model.get_output_embeddings()):
        if module is not None:
            module.weight.requires_grad_(False)  # base weights, as PEFT loads them: not trained unless asked
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(embeddings[emb_name])
        if head_name in embeddings and model.get_output_embeddings().weight is not model.get_input_embeddings().weight:
            model.get_output_embeddings().weight.copy_(embeddings[head_name])
