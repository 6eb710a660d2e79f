"""Merging LoRA into the base weights, for serving without the adapter: W0 ← W0 + ΔW for every layer.

Each LoRALinear knows how to merge itself (`LoRALinear.merge`, or a subclass's own: a 4-bit,
DoRA or QA-LoRA layer). This module does it for a whole model and takes care of what lies around
the layers: a base it cannot write to (refused before anything changes), a 4-bit base (requantized
with a warning, or dequantized exactly with dequantize=True, after which the model's
quantization_config goes too), and a target whose weight is tied to the embeddings (given its own
copy first, with a warning: peft#2018).
"""

import warnings

import torch
from torch import nn

from . import base4bit
from .lora import LoRALinear, _set_submodule, lora_layers, tied_targets


def _check_mergeable(name: str, layer: LoRALinear) -> None:
    base = layer.base_layer
    weight = getattr(base, "weight", None)
    cls = type(layer)
    if cls._add_to_base_weight is not LoRALinear._add_to_base_weight or cls.merge is not LoRALinear.merge:
        return  # a subclass (QLoRALinear, QALoRALinear, ...) writes its own base
    if base4bit.is_4bit(base) or (isinstance(weight, torch.Tensor) and weight.is_floating_point()):
        return
    kind = weight.dtype if isinstance(weight, torch.Tensor) else type(weight).__name__
    raise TypeError(f"cannot merge LoRA into {name!r}: its base is a {type(base).__name__} with a {kind} weight; "
                    "lora_lab merges into nn.Linear, Conv1D, its NF4Linear and bitsandbytes' Linear4bit. "
                    "Keep the adapter unmerged, or reload the base in full precision and merge there")


def _untie(model: nn.Module, layers: list[tuple[str, LoRALinear]]) -> None:
    # a merge writes the base weight; one shared with the embeddings would change them too (peft#2018)
    tied = tied_targets(model, [name for name, layer in layers if not layer.merged])
    for name in tied:
        base = model.get_submodule(name).base_layer
        base.weight = nn.Parameter(base.weight.detach().clone(), requires_grad=False)
    if tied:
        config = getattr(model, "config", None)
        if config is not None and getattr(config, "tie_word_embeddings", False):
            config.tie_word_embeddings = False
        warnings.warn(f"{sorted(tied)} shared their weight with {sorted(sum(tied.values(), []))}; each got its own copy "
                      "before the merge, so the embeddings stay as they were (tie_word_embeddings is now False; the "
                      "saved model holds both matrices)", stacklevel=3)


def merge_lora(model: nn.Module, unload: bool = False, dequantize: bool = False) -> nn.Module:
    """Fold every ΔW into its base weight; with unload=True also put the plain base layers back.

    A 4-bit base (NF4Linear, bitsandbytes' Linear4bit) is dequantized, given ΔW and quantized again,
    with a warning: that rounds part of ΔW away. dequantize=True is the exact alternative: every LoRA
    layer becomes a plain nn.Linear holding dequant(W0) + ΔW in the base's original dtype (it
    implies unload); once no 4-bit layer is left, the model's quantization_config is dropped, so
    save_pretrained writes a plain full-precision model. A target tied to another weight (lm_head and
    the embeddings) gets its own copy first, with a warning. Raises ValueError without LoRA layers,
    TypeError for a base it cannot write to (before any layer changes).
    """
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"model={type(model).__name__} has no LoRA layers to merge; call inject_lora first")
    for name, layer in layers:
        _check_mergeable(name, layer)
    _untie(model, layers)
    for name, layer in layers:
        if dequantize and base4bit.is_4bit(layer.base_layer):
            w = base4bit.dequantized_weight(layer.base_layer)  # (out, in) fp32, W0 (+ ΔW if already merged)
            if not layer.merged:
                w = w + layer.get_delta_weight().float()
            _set_submodule(model, name, base4bit.to_linear(layer.base_layer, w))
            continue
        layer.merge()
        if unload or dequantize:
            _set_submodule(model, name, layer.base_layer)
    if unload or dequantize:
        for attr in ("lora_config", "lora_base_fingerprint"):
            if hasattr(model, attr):
                delattr(model, attr)
    if dequantize:
        base4bit.forget_quantization(model)
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Subtract every merged ΔW from its base weight again (a 4-bit base is requantized: not its old codes)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError(f"model={type(model).__name__} has no LoRA layers to unmerge; was it unloaded?")
    for name, layer in layers:
        _check_mergeable(name, layer)
    for _, layer in layers:
        layer.unmerge()
    return model
