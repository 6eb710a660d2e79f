"""One front door for every adapter the kit builds: which layer a `LoraConfig` asks for, and what its files hold.

`inject_lora(model, config)` asks `layer_class(config, ...)` for the layer to wrap each target in:

    config.variant   layer                                       base after injection
    "lora"           LoRALinear                                  W0, as it was
    "dora"           DoRALinear (lora_lab.dora)                  W0, plus a trained length per row
    "pissa"          LoRALinear, A and B from W0's top-r SVD     W_res = W0 − s·B0·A0 (lora_lab.pissa)
    "loftq"          QLoRALinear over LoftQ's NF4 weight Q       Q (lora_lab.loftq)
    "qalora"         QALoRALinear                                group-wise INT4 of W0 (lora_lab.qalora)

The per-variant functions (get_dora_model, get_pissa_model, ...) stay as the notebooks' teaching
steps; each now goes through this door, so `save_adapter` and `load_adapter` know what they hold.
"""

from __future__ import annotations

import copy
import functools

import torch
from torch import nn

from .lora import LoRALinear, _features, _set_submodule, lora_layers
from .lora_config import LoraConfig

MAGNITUDE = "lora_magnitude_vector"  # PEFT's name for DoRA's lengths, in the layer and in adapter files


def _pissa_layer(base_layer: nn.Module, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                 init_lora_weights=False, use_rslora: bool = False, fan_in_fan_out: bool = False) -> LoRALinear:
    """A LoRALinear holding W0's top-r singular part, its base W_res; keeps (A0, B0) for the conversion to plain LoRA."""
    from .pissa import pissa_init_

    layer = LoRALinear(base_layer, r, lora_alpha, lora_dropout, False, use_rslora, fan_in_fan_out)
    pissa_init_(layer)
    layer.pissa_initial = (layer.lora_A.weight.detach().clone(), layer.lora_B.weight.detach().clone())
    return layer


def layer_class(config: LoraConfig, targets: list[tuple[str, nn.Module]], qalora_dtype: torch.dtype = torch.float16,
                loftq_double_quant: bool = False):
    """The layer class (or builder) inject_lora wraps each target in; checks every target before any is changed.

    Raises TypeError for a target the variant cannot wrap (PiSSA, LoftQ and DoRA need a full-precision
    nn.Linear), ValueError for a QA-LoRA group size that does not divide a target's in_features.
    """
    variant = config.variant
    if variant in ("pissa", "loftq", "dora"):
        for name, module in targets:
            weight = getattr(module, "weight", None)
            if not isinstance(module, nn.Linear) or weight.dtype not in (torch.float32, torch.float16, torch.bfloat16):
                kind = type(module).__name__ + (f" with {weight.dtype} weights" if isinstance(module, nn.Linear) else "")
                why = {"pissa": "PiSSA needs the SVD of a full-precision weight",
                       "loftq": "LoftQ quantizes the full-precision weight W0 itself",
                       "dora": "DoRA takes the norm of the full-precision weight"}[variant]
                raise TypeError(f"target {name!r}={kind} is not accepted; {why}: an nn.Linear with float32, float16 "
                                "or bfloat16 weights. Load the base in full precision (quantization=None) for it")
    if variant == "dora":
        from .dora import DoRALinear
        return DoRALinear
    if variant == "pissa":
        return _pissa_layer
    if variant == "loftq":
        from .loftq import _loftq_layer
        return functools.partial(_loftq_layer, num_iter=config.loftq_config.get("loftq_iter", 1),
                                 double_quant=loftq_double_quant)
    if variant == "qalora":
        from .qalora import QALoRALinear, _check_group_size
        for name, module in targets:
            try:
                _check_group_size(config.qalora_group_size, _features(module)[0])
            except (TypeError, ValueError) as e:
                raise ValueError(f"target {name!r}: {e}") from None
        return functools.partial(QALoRALinear, qalora_group_size=config.qalora_group_size, dtype=qalora_dtype)
    return LoRALinear


def describe(config: LoraConfig, layers: list[tuple[str, LoRALinear]]) -> LoraConfig:
    """The config as the layers really are: use_dora / use_qalora set from their classes (the layers are the truth)."""
    from .dora import DoRALinear
    from .qalora import QALoRALinear

    kinds = {type(layer) for _, layer in layers}
    dora = all(isinstance(layer, DoRALinear) for _, layer in layers)
    qalora = all(isinstance(layer, QALoRALinear) for _, layer in layers)
    if (dora or qalora) and len(kinds) == 1 and (dora != config.use_dora or qalora != config.use_qalora):
        group = layers[0][1].qalora_group_size if qalora else config.qalora_group_size
        init = config.init_lora_weights if config.init_lora_weights not in ("pissa", "loftq") else False
        return LoraConfig(**{**config.__dict__, "use_dora": dora, "use_qalora": qalora, "qalora_group_size": group,
                             "init_lora_weights": init, "loftq_config": {}})
    if any(isinstance(layer, (DoRALinear, QALoRALinear)) for _, layer in layers) and not (dora or qalora):
        raise ValueError(f"the model mixes LoRA layer kinds ({sorted(k.__name__ for k in kinds)}); one adapter file "
                         "holds one kind")
    return config


def expected_shapes(model: nn.Module, names: list[str], config: LoraConfig) -> dict[str, tuple]:
    """{key: shape} of every LoRA tensor an adapter file must hold for these targets (keys without PEFT's prefix)."""
    shapes = {}
    for name in names:
        fin, fout = _features(model.get_submodule(name))
        width = fin // config.qalora_group_size if config.use_qalora else fin
        shapes[f"{name}.lora_A.weight"] = (config.r, width)  # (r, in_features), QA-LoRA: (r, G)
        shapes[f"{name}.lora_B.weight"] = (fout, config.r)  # (out_features, r)
        if config.use_dora:
            shapes[f"{name}.{MAGNITUDE}"] = (fout,)
        bias = getattr(model.get_submodule(name), "bias", None)
        if config.bias == "lora_only" and isinstance(bias, torch.Tensor):
            shapes[f"{name}.base_layer.bias"] = tuple(bias.shape)
    if config.bias == "all":
        for n, p in model.named_parameters():
            if "bias" in n:
                module, _, leaf = n.rpartition(".")
                shapes[f"{module}.base_layer.{leaf}" if module in names else n] = tuple(p.shape)
    return shapes


def to_plain_lora(model: nn.Module, prefix: str, initial: dict | None = None) -> dict[str, torch.Tensor]:
    """A trained PiSSA adapter as a plain LoRA on W0 of rank 2r (PEFT's conversion); see lora_lab.pissa.pissa_to_lora."""
    from .pissa import pissa_to_lora

    if initial is None:
        layers = lora_layers(model)
        if not all(hasattr(layer, "pissa_initial") for _, layer in layers):
            raise ValueError("convert_to_lora=True needs PiSSA's initial A and B, kept by inject_lora with "
                             "init_lora_weights='pissa' (or get_pissa_model); this model has none")
        initial = {}
        for name, layer in layers:
            initial[f"{prefix}{name}.lora_A.weight"], initial[f"{prefix}{name}.lora_B.weight"] = layer.pissa_initial
    return pissa_to_lora(model, initial)


def unwrapped_base(model: nn.Module) -> nn.Module:
    """A copy of the model with each LoRA layer replaced by a plain nn.Linear holding the weight it sits on.

    For LoftQ that is the quantized weight Q (dequantized), for PiSSA the residual W_res: the base
    that PEFT's recipes save beside such an adapter. Raises ValueError for a merged layer.
    """
    from . import base4bit
    from .fingerprint import base_weight

    inside = {id(m) for _, layer in lora_layers(model) for m in layer.modules()}
    if others := [n for n, m in model.named_modules() if base4bit.is_4bit(m) and id(m) not in inside]:
        raise ValueError(f"save_base=True writes a plain full-precision model, and {others[0]!r} (with "
                         f"{len(others) - 1} more) is a 4-bit layer outside the adapter; save the base you loaded "
                         "instead, or quantize only the targets")
    out = copy.deepcopy(model)
    for name, layer in lora_layers(out):
        if layer.merged:
            raise ValueError(f"layer {name!r} is merged; unmerge_lora(model) first, so the base holds what the adapter "
                             "sits on")
        base = layer.base_layer
        weight = base_weight(base)  # (out, in) fp32
        dtype = base4bit.original_dtype(base) if base4bit.is_4bit(base) else (
            base.weight.dtype if base.weight.is_floating_point() else torch.float32)  # an INT4 base: fp32
        linear = nn.Linear(layer.in_features, layer.out_features, bias=getattr(base, "bias", None) is not None,
                           dtype=dtype, device=weight.device)
        with torch.no_grad():
            linear.weight.copy_(weight)
            if linear.bias is not None:
                linear.bias.copy_(base.bias)
        _set_submodule(out, name, linear.requires_grad_(False))
    for attr in ("lora_config", "lora_base_fingerprint"):
        if hasattr(out, attr):
            delattr(out, attr)
    return out
