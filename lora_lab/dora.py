"""DoRA, weight-decomposed LoRA, after Liu et al. 2024 (arXiv 2402.09353), in PEFT's form (`use_dora=True`).

DoRA splits the adapted weight into a length and a direction per output feature:

    W' = m · (W0 + (α/r)·B·A) / ‖W0 + (α/r)·B·A‖        norm over each row (one output feature), m: (out,)

m (`lora_magnitude_vector`) starts at ‖W0‖ row by row, so W' = W0 at init, and trains next to A and B.
As the paper suggests (§4.3) and PEFT does, the norm is treated as a constant in the backward pass:
gradients reach m, A and B, but not through the norm. Merging writes W' into the base weight; PEFT
keeps the norm it merged with so that unmerge can divide it out again, and so does this module.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.nn.functional as F
from torch import nn

from . import adapters
from .lora import LoraConfig, LoRALinear, inject_lora, lora_layers

MAGNITUDE = "lora_magnitude_vector"  # PEFT's name, in the layer and in saved adapter files


class DoRALinear(LoRALinear):
    """LoRA whose adapted weight is rescaled, row by row, to a trained length m: (m / ‖W0 + ΔW‖) · (W0 + ΔW).

    A: (r, in_features), B: (out_features, r), lora_magnitude_vector m: (out_features,). Raises TypeError
    for a base that is not an nn.Linear with float weights (a 4-bit layer, say), ValueError for
    r > min(in_features, out_features).
    """

    def __init__(self, base_layer: nn.Module, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                 init_lora_weights: bool | str = "gaussian", use_rslora: bool = False, fan_in_fan_out: bool = False):
        if not isinstance(base_layer, nn.Linear) or base_layer.weight.dtype not in (torch.float32, torch.float16,
                                                                                    torch.bfloat16):
            what = type(base_layer).__name__ + ("" if not isinstance(base_layer, nn.Linear)
                                                else f" with {base_layer.weight.dtype} weights")
            raise TypeError(f"base_layer={what} is not accepted; DoRALinear wraps an nn.Linear with float32, float16 or "
                            "bfloat16 weights (its norm is taken over the full-precision weight). For a 4-bit base, "
                            "use QLoRALinear (plain LoRA) or PEFT's use_dora on bitsandbytes layers")
        super().__init__(base_layer, r, lora_alpha, lora_dropout, init_lora_weights, use_rslora, fan_in_fan_out)
        with torch.no_grad():  # m = ‖W0 + ΔW‖ per row, so that the layer starts as the base layer (ΔW = 0 unless B ≠ 0)
            magnitude = self.weight_norm()  # (out,)
        self.lora_magnitude_vector = nn.Parameter(magnitude)
        self._merged_norm: torch.Tensor | None = None  # the norm merge() divided by, for unmerge()

    def weight_norm(self) -> torch.Tensor:
        """‖W0 + (α/r)·B·A‖ of every output feature (the L2 norm of each weight row): (out_features,)."""
        weight = self.base_layer.weight.float() + self.get_delta_weight().float()  # (out, in)
        return torch.linalg.norm(weight, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = (m / ‖W0 + ΔW‖)·(W0·x + ΔW·x) + bias, computed as PEFT does: base output plus a correction."""
        result = self.base_layer(x)  # (..., out): W0·x + bias
        if self.merged:
            return result
        x = x.to(self.lora_A.weight.dtype)
        norm = self.weight_norm().detach()  # a constant in the backward pass (DoRA §4.3)
        factor = self.lora_magnitude_vector / norm  # (out,)
        if isinstance(self.lora_dropout, nn.Identity) or not self.training:
            base_out = result if self.base_layer.bias is None else result - self.base_layer.bias  # W0·x
        else:  # with dropout the adapted weight sees the dropped input, the plain base output the full one
            x = self.lora_dropout(x)
            base_out = F.linear(x, self.base_layer.weight.to(x.dtype))
        lora_out = self.lora_B(self.lora_A(x)) * self.scaling  # (..., out): ΔW·x
        return (result + (factor - 1) * base_out + factor * lora_out).to(result.dtype)

    def merge(self) -> None:
        """W0 ← (m / ‖W0 + ΔW‖)·(W0 + ΔW), keeping the norm for unmerge(); a no-op when already merged."""
        if self.merged:
            return
        weight = self.base_layer.weight
        with torch.no_grad():
            delta = self.get_delta_weight().float()  # (out, in)
            self._merged_norm = torch.linalg.norm(weight.float() + delta, dim=1)  # (out,)
            factor = (self.lora_magnitude_vector / self._merged_norm)[:, None]  # (out, 1)
            weight.copy_((factor * (weight.float() + delta)).to(weight.dtype))
        self.merged = True

    def unmerge(self) -> None:
        """W0 ← W' / (m / norm) − ΔW with the norm merge() used, undoing merge() up to float rounding."""
        if not self.merged:
            return
        weight = self.base_layer.weight
        with torch.no_grad():
            factor = (self.lora_magnitude_vector / self._merged_norm)[:, None]
            weight.copy_((weight.float() / factor - self.get_delta_weight().float()).to(weight.dtype))
        self._merged_norm, self.merged = None, False


def get_dora_model(model: nn.Module, lora_config: LoraConfig) -> nn.Module:
    """Put a DoRALinear on every target module, in place, like peft.get_peft_model with use_dora=True.

    The same as inject_lora(model, LoraConfig(..., use_dora=True)).
    """
    return inject_lora(model, dataclasses.replace(lora_config, use_dora=True))


def save_dora_adapter(model: nn.Module, path: str | os.PathLike) -> None:
    """Write a DoRA model's adapter in PEFT's format (use_dora: true); lora_lab.save_adapter does the same for any kind."""
    layers = lora_layers(model)
    if not layers or not all(isinstance(layer, DoRALinear) for _, layer in layers):
        raise ValueError(f"model={type(model).__name__} has no DoRA layers (from get_dora_model or load_dora_adapter)")
    adapters.save_adapter(model, path)


def load_dora_adapter(base_model: nn.Module, path: str | os.PathLike, is_trainable: bool = False) -> nn.Module:
    """Load an adapter folder whose config says use_dora: true; lora_lab.load_adapter loads any kind."""
    if not adapters.read_adapter_config(path).use_dora:
        raise ValueError(f"{os.path.join(path, adapters.CONFIG_NAME)!r} does not set use_dora: true; load it with "
                         "lora_lab.load_adapter")
    return adapters.load_adapter(base_model, path, is_trainable=is_trainable)
