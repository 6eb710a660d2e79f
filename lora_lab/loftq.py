"""LoftQ: choose the 4-bit weight and the LoRA init together, after Li et al. 2023 (arXiv 2310.08659).

QLoRA starts from Q = NF4(W0) and B = 0, so the model it fine-tunes is off by W0 − Q from the start.
LoftQ alternates two steps so that Q + s·B·A (s = α/r) starts closer to W0:

    Q_t = NF4(W0 − s·B_{t−1}·A_{t−1})          quantize what the adapter does not cover (B_0·A_0 = 0)
    s·B_t·A_t = best rank-r approximation of W0 − Q_t        (truncated SVD)

Iteration 1 is already better than QLoRA's start; later ones help less. The 4-bit format is the kit's
own NF4 (`lora_lab.nf4`, byte for byte bitsandbytes'), with blocksize 64 and no double quantization,
as PEFT's `loftq_init` calls bitsandbytes (`Params4bit(..., compress_statistics=False, quant_type="nf4")`).

Two differences from PEFT 0.21's `peft.utils.loftq_utils.loftq_init`: (1) it returns B·A for a scaling
of 1 — LoRA's forward then multiplies it by α/r, so PEFT's start is exact only when lora_alpha = r —
while `loftq_init` here divides by the scaling, splitting 1/√s onto A and B; (2) it moves the weight
to "cuda" (or "xpu"), hard-coded, so it cannot run on a CPU-only machine; `peft_loftq_init` runs it
there with that device name mapped to the CPU, so the two can be compared anywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .lora import LoraConfig, inject_lora
from .lora_config import check_lora_args
from .nf4 import NF4Tensor, dequantize_nf4, quantize_nf4
from .qlora import NF4Linear, QLoRALinear


@dataclass
class LoftQResult:
    quantized: NF4Tensor  # Q, the weight the 4-bit base stores
    lora_A: torch.Tensor  # (r, in_features)
    lora_B: torch.Tensor  # (out_features, r)
    errors: list[float] = field(default_factory=list)  # ‖W0 − Q − s·B·A‖_F: [0] is QLoRA's start (B = 0), [t] after iteration t


def low_rank_decomposition(m: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, R) with L·R the best rank-r approximation of m: L = U_r·√S_r (out, r), R = √S_r·V_rᵀ (r, in)."""
    U, S, Vh = torch.linalg.svd(m, full_matrices=False)
    root = torch.sqrt(torch.diag(S))  # (k, k); written as PEFT writes it, so both give the same bits
    return U @ root[:, :r], root[:r, :] @ Vh


def loftq_init(weight: torch.Tensor, r: int, num_iter: int = 1, scaling: float = 1.0, blocksize: int = 64,
               double_quant: bool = False) -> LoftQResult:
    """Alternate NF4 quantization and a rank-r SVD `num_iter` times; returns Q, A, B and the error after each step."""
    if weight.dim() != 2:
        raise ValueError(f"weight of shape {tuple(weight.shape)} is not accepted; LoftQ takes a 2-D (out, in) weight")
    if not isinstance(r, int) or isinstance(r, bool) or not 0 < r <= min(weight.shape):
        raise ValueError(f"r={r!r} is not accepted for a {weight.shape[1]}→{weight.shape[0]} weight; "
                         f"r must be an int in 1..{min(weight.shape)}")
    if not isinstance(num_iter, int) or isinstance(num_iter, bool) or num_iter < 1:
        raise ValueError(f"num_iter={num_iter!r} is not accepted; give an int >= 1")
    if not scaling > 0:
        raise ValueError(f"scaling={scaling!r} is not accepted; it is lora_alpha / r, a number > 0")
    w = weight.detach().float()  # (out, in)
    start = w - dequantize_nf4(quantize_nf4(w, blocksize, double_quant), torch.float32)
    errors = [float(torch.linalg.norm(start))]
    lowrank = torch.zeros_like(w)  # s·B·A, zero before the first iteration
    for _ in range(num_iter):
        q = quantize_nf4(w - lowrank, blocksize, double_quant)
        residual = w - dequantize_nf4(q, torch.float32)  # what 4 bits missed: W0 − Q
        L, R = low_rank_decomposition(residual, r)
        lowrank = L @ R
        errors.append(float(torch.linalg.norm(residual - lowrank)))
    root = math.sqrt(scaling)  # s·B·A = L·R with the scaling split evenly between the factors
    return LoftQResult(q, R / root, L / root, errors)


def _loftq_layer(base_layer: nn.Module, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                 init_lora_weights: bool | str = "gaussian", use_rslora: bool = False, fan_in_fan_out: bool = False,
                 num_iter: int = 1, double_quant: bool = False) -> QLoRALinear:
    """A QLoRALinear whose NF4 base and A, B come from loftq_init (inject_lora's layer_cls); init_lora_weights is not read."""
    check_lora_args(r, lora_alpha, lora_dropout, False)
    if not isinstance(base_layer, nn.Linear):
        raise TypeError(f"base_layer={type(base_layer).__name__} is not accepted; LoftQ needs the full-precision "
                        "weight W0 of an nn.Linear (it chooses the 4-bit weight itself)")
    scaling = lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r
    result = loftq_init(base_layer.weight, r, num_iter, scaling, double_quant=double_quant)
    layer = QLoRALinear(NF4Linear(result.quantized, base_layer.bias), r, lora_alpha, lora_dropout, False, use_rslora,
                        fan_in_fan_out)
    with torch.no_grad():
        layer.lora_A.weight.copy_(result.lora_A)
        layer.lora_B.weight.copy_(result.lora_B)
    layer.loftq_errors = result.errors
    return layer


def get_loftq_model(model: nn.Module, lora_config: LoraConfig, num_iter: int = 1, double_quant: bool = False) -> nn.Module:
    """QLoRA with LoftQ's init: every target nn.Linear becomes a QLoRALinear over LoftQ's NF4 weight, in place.

    The same as inject_lora(model, LoraConfig(..., init_lora_weights="loftq", loftq_config={"loftq_bits": 4,
    "loftq_iter": num_iter})), PEFT's way to ask for it; LoftQ sets A and B itself. double_quant=True also
    quantizes the block scales (PEFT's LoftQ never does). Raises TypeError for a target that is not a
    full-precision nn.Linear, ValueError for a rank the layer cannot take.
    """
    config = dataclasses.replace(lora_config, init_lora_weights="loftq", loftq_config={"loftq_bits": 4,
                                                                                       "loftq_iter": num_iter})
    if not double_quant:
        return inject_lora(model, config)
    layer_cls = functools.partial(_loftq_layer, num_iter=num_iter, double_quant=True)
    return inject_lora(model, config, layer_cls=layer_cls)


@contextlib.contextmanager
def _cuda_as_cpu():
    """While open, tensor.to("cuda") (and bitsandbytes' Params4bit.to) go to the CPU instead."""
    import bitsandbytes as bnb

    def cpu(args, kwargs):
        is_cuda = lambda d: isinstance(d, (str, torch.device)) and torch.device(d).type in ("cuda", "xpu")
        args = tuple("cpu" if is_cuda(a) else a for a in args)
        if is_cuda(kwargs.get("device")):
            kwargs = {**kwargs, "device": "cpu"}
        return args, kwargs

    tensor_to, params_to = torch.Tensor.to, bnb.nn.Params4bit.to
    inherited = "to" not in vars(torch.Tensor)  # torch.Tensor.to lives on its C base class

    def patched(original):
        def to(self, *args, **kwargs):
            args, kwargs = cpu(args, kwargs)
            return original(self, *args, **kwargs)
        return to

    torch.Tensor.to, bnb.nn.Params4bit.to = patched(tensor_to), patched(params_to)
    try:
        yield
    finally:
        bnb.nn.Params4bit.to = params_to
        if inherited:
            del torch.Tensor.to
        else:
            torch.Tensor.to = tensor_to


def peft_loftq_init(weight: torch.Tensor, r: int, num_iter: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PEFT's own loftq_init(weight, num_bits=4, reduced_rank=r, num_iter): (dequantized Q, lora_A, lora_B).

    On a machine without a GPU its hard-coded "cuda" device is mapped to the CPU while it runs.
    """
    from peft.utils.loftq_utils import loftq_init as peft_loftq

    if torch.cuda.is_available():
        return peft_loftq(weight, num_bits=4, reduced_rank=r, num_iter=num_iter)
    with _cuda_as_cpu():
        return peft_loftq(weight, num_bits=4, reduced_rank=r, num_iter=num_iter)
