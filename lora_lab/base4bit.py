"""A frozen 4-bit base layer's weight, read back in full precision and written again, so LoRA can merge into it.

Two kinds of 4-bit layer reach lora_lab: its own NF4Linear (any module with `dequantize()` and
`requantize_()`) and bitsandbytes' `Linear4bit`, whose `Params4bit` weight holds packed uint8 codes
plus a QuantState (what transformers builds for `load_in_4bit`). Writing W0 + ΔW back rounds it to
the 4-bit grid again, so part of ΔW is lost: the adapter was trained on dequant(NF4(W0)) (Dettmers
et al. 2023, arXiv 2305.14314), and notebook 05 measures how far merged answers drift.
"""

import torch
from torch import nn

DRIFT_WARNING = (
    "merging (or unmerging) LoRA into a 4-bit weight dequantizes it, adds ΔW and quantizes it again: part of ΔW is "
    "rounded away, so answers can drift (notebook 05 measures it). For an exact merge call "
    "merge_lora(model, unload=True, dequantize=True): full-precision nn.Linear layers holding W0 + ΔW.")


def is_bnb_4bit(layer: nn.Module) -> bool:
    """True for a bitsandbytes Linear4bit (or any layer whose weight is a Params4bit)."""
    return type(getattr(layer, "weight", None)).__name__ == "Params4bit"


def is_4bit(layer: nn.Module) -> bool:
    """True for a layer whose weight is stored in 4 bits: bitsandbytes' Linear4bit or lora_lab's NF4Linear."""
    return is_bnb_4bit(layer) or (callable(getattr(layer, "dequantize", None))
                                  and callable(getattr(layer, "requantize_", None)))


def original_dtype(layer: nn.Module) -> torch.dtype:
    """The dtype the weight had before it was quantized (what dequantization returns)."""
    return layer.weight.quant_state.dtype if is_bnb_4bit(layer) else layer.weight_dtype


def _unpack_for_cpu(layer: nn.Module) -> None:
    # bitsandbytes 0.50 repacks a Linear4bit for its AVX512-BF16 CPU kernel on the first eval forward;
    # dequantize_4bit reads the plain layout only, so undo the repacking as bitsandbytes does before saving
    weight = layer.weight
    if getattr(weight.quant_state, "packing_format_for_cpu", False):
        import bitsandbytes.functional as F

        inverse = getattr(F, "_convert_weight_packed_for_cpu_inverse", None)
        if inverse is None:
            raise RuntimeError(f"{type(layer).__name__}'s weight is packed for bitsandbytes' CPU kernel, and this "
                               "bitsandbytes cannot unpack it; reload the model and merge before evaluating it")
        weight.data, weight.quant_state = inverse(weight.data, weight.quant_state)
        layer.quant_state = weight.quant_state


def dequantized_weight(layer: nn.Module) -> torch.Tensor:
    """The weight W0 as stored, (out_features, in_features), in fp32."""
    if is_bnb_4bit(layer):
        import bitsandbytes.functional as F

        _unpack_for_cpu(layer)
        return F.dequantize_4bit(layer.weight.data, layer.weight.quant_state).float()
    return layer.dequantize(torch.float32)


def requantize_(layer: nn.Module, weight: torch.Tensor) -> None:
    """Store `weight` (out_features, in_features) in the layer with its own 4-bit settings (rounds it)."""
    with torch.no_grad():
        if not is_bnb_4bit(layer):
            layer.requantize_(weight)
            return
        import bitsandbytes as bnb

        old = layer.weight
        new = bnb.nn.Params4bit(weight.to(old.quant_state.dtype).cpu(), requires_grad=False, blocksize=old.blocksize,
                                compress_statistics=old.compress_statistics, quant_type=old.quant_type,
                                quant_storage=old.quant_storage, module=layer)
        layer.weight = new.to(old.device)  # moving a Params4bit to a device quantizes it


def to_linear(layer: nn.Module, weight: torch.Tensor) -> nn.Linear:
    """A plain nn.Linear holding `weight` (out, in) in the layer's original dtype, with the layer's bias."""
    bias = getattr(layer, "bias", None)
    dtype = original_dtype(layer)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    return linear


def forget_quantization(model: nn.Module) -> None:
    """Once no 4-bit layer is left, drop what says the model is quantized (config.quantization_config and
    transformers' quantizer), so save_pretrained writes plain weights that reload as such (transformers#34847)."""
    if any(is_4bit(m) for m in model.modules()):
        return
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and callable(getattr(quantizer, "remove_quantization_config", None)):
        quantizer.remove_quantization_config(model)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "quantization_config"):
        del config.quantization_config
    for attr in ("is_loaded_in_4bit", "is_quantized"):
        if getattr(model, attr, False):
            setattr(model, attr, False)
