"""PiSSA: LoRA initialised from the principal singular vectors of W0, after Meng et al. 2024 (arXiv 2404.02948).

Plain LoRA starts with B = 0 and trains a correction to W0. PiSSA moves the top r singular directions
of W0 into the adapter instead, and leaves the rest in the frozen base:

    W0 = U·S·Vᵀ,   B = U_r·√(S_r/s),   A = √(S_r/s)·V_rᵀ,   W_res = W0 − s·B·A        s = α/r

so at init the model is unchanged (W_res + s·B·A = W0) but the adapter holds the weight's most
important part, where plain LoRA holds nothing. This is PEFT's `init_lora_weights="pissa"` (the exact
SVD; "pissa_niter_k" is a faster randomised one), written with the same operations.

The catch is what a saved adapter means: its A and B belong on W_res, not on W0. PEFT handles it two
ways: an adapter whose config says init_lora_weights="pissa" makes PEFT redo the SVD of whatever base
it is loaded onto (right on W0, wrong on a saved W_res), and `save_pretrained(...,
path_initial_model_for_weight_conversion=...)` turns it into a plain LoRA of rank 2r that belongs on
W0:  s·B·A − s·B0·A0 = s·[B | −B0]·[A ; A0]  (so r and lora_alpha double, the scaling stays).
`lora_lab.save_adapter` writes the first by default (and, unlike PEFT, a fingerprint that tells W0 from a
saved W_res on load); `save_adapter(..., convert_to_lora=True)`, `pissa_to_lora` and `save_pissa_as_lora`
do the second.
"""

from __future__ import annotations

import dataclasses
import os

import torch
from torch import nn

from . import adapters
from .lora import LoraConfig, LoRALinear, inject_lora

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_base(base: nn.Module, what: str) -> None:
    if not isinstance(base, nn.Linear) or base.weight.dtype not in FLOAT_DTYPES:
        kind = type(base).__name__ + (f" with {base.weight.dtype} weights" if isinstance(base, nn.Linear) else "")
        raise TypeError(f"{what}={kind} is not accepted; PiSSA needs the SVD of a full-precision weight: an nn.Linear "
                        "with float32, float16 or bfloat16 weights. For a 4-bit model, run PiSSA in full precision "
                        "first, then quantize the residual (PEFT's advice too)")


def pissa_init_(layer: LoRALinear) -> None:
    """Set A, B to W0's top-r singular triplets (split as √S on each side, divided by the scaling) and W0 to the residual."""
    if type(layer) is not LoRALinear:
        raise TypeError(f"layer={type(layer).__name__} is not accepted; pissa_init_ takes a plain LoRALinear")
    base = layer.base_layer
    _check_base(base, "layer.base_layer")
    weight = base.weight.float()  # (out, in)
    with torch.no_grad():
        U, S, Vh = torch.linalg.svd(weight, full_matrices=False)  # U: (out, k), S: (k,), Vh: (k, in)
        Ur, Sr, Vhr = U[:, : layer.r], S[: layer.r] / layer.scaling, Vh[: layer.r]
        lora_A = torch.diag(torch.sqrt(Sr)) @ Vhr  # (r, in)
        lora_B = Ur @ torch.diag(torch.sqrt(Sr))  # (out, r)
        layer.lora_A.weight.copy_(lora_A)
        layer.lora_B.weight.copy_(lora_B)
        base.weight.copy_((weight - layer.scaling * lora_B @ lora_A).to(base.weight.dtype))  # W_res


def get_pissa_model(model: nn.Module, lora_config: LoraConfig) -> nn.Module:
    """Put LoRA on every target module with PiSSA's init, in place, like peft.get_peft_model with init_lora_weights="pissa".

    The same as inject_lora(model, LoraConfig(..., init_lora_weights="pissa")); every target is checked first.
    """
    return inject_lora(model, dataclasses.replace(lora_config, init_lora_weights="pissa"))


def adapter_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every lora_A and lora_B under PEFT's keys: keep the one taken right after init for pissa_to_lora."""
    return {k: v.detach().clone() for k, v in adapters.adapter_state_dict(model).items()}


def pissa_to_lora(model: nn.Module, initial: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The trained PiSSA adapter as a plain LoRA on W0, rank 2r: A' = [A ; A0], B' = [B | −B0] (PEFT's conversion)."""
    now = adapters.adapter_state_dict(model)
    if now.keys() != initial.keys():
        raise ValueError(f"initial has {len(initial)} tensors, the model's adapter {len(now)}: pass "
                         "adapter_tensors(model) taken right after get_pissa_model")
    converted = {}
    for key, value in now.items():
        if key.endswith("lora_A.weight"):
            converted[key] = torch.cat([value, initial[key]], dim=0).detach()  # (2r, in)
        elif key.endswith("lora_B.weight"):
            converted[key] = torch.cat([value, -initial[key]], dim=1).detach()  # (out, 2r)
        else:
            raise ValueError(f"{key!r}: only lora_A and lora_B convert (train PiSSA with bias='none')")
    return converted


def save_pissa_as_lora(model: nn.Module, initial: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write pissa_to_lora's adapter in PEFT's format (r and lora_alpha doubled): it loads onto the original base.

    save_adapter(model, path, convert_to_lora=True) does the same with the initial A and B the model kept.
    """
    adapters._save(model, path, False, True, initial, False)
