"""What bitsandbytes' 4-bit CPU kernels do on *this* machine: which code path they take, and whether it is exact.

bitsandbytes 0.50's CPU `dequantize_4bit` (csrc/cpu_ops.cpp, `dequantizeBlockwise4bitCpu`, called from
bitsandbytes/backends/cpu/ops.py) has three paths:
- an odd last dimension, or blocksize >= 2048 while torch runs its AVX-512 kernels, goes to a pure-PyTorch
  fallback: exact;
- on a CPU that reports AVX-512F (the C++ library asks the CPU itself, `__builtin_cpu_supports`), a last
  dimension that is a multiple of 16 and a blocksize of at least 16 take a vectorised kernel that looks up
  block scales *per row*, as if every row held whole blocks. Where the last dimension is not a multiple of
  the blocksize, rows after the first read the wrong scales: wrong values, not rounding;
- everything else (AVX2-only x86 CPUs, ARM, other shapes) takes a scalar loop over the flat tensor: exact.
  (ARM's vectorised kernel in 0.50 already checks that rows hold whole blocks.)

The library's choice follows the CPU, not `ATEN_CPU_CAPABILITY`, so it cannot be switched by that variable;
only the blocksize >= 2048 fallback follows torch's capability. This module predicts the path from those
rules and measures it, so a notebook can say which case its reader's machine is in.

On CPUs with AVX512-BF16, bitsandbytes 0.50 also repacks a `Linear4bit`'s weight the first time the layer
runs in eval mode without gradients (scales cast to bf16, double quantization undone), after which the
layer runs through a kernel with no backward; `keep_4bit_weights_as_trained` turns that off.
"""

from __future__ import annotations

import platform
from math import prod

import torch
from torch import nn

from .i18n import _

PROBE_SHAPE, PROBE_BLOCKSIZE = (8, 48), 64  # 48 % 16 == 0 and 48 % 64 != 0: the shape that tells the paths apart


def cpu_features() -> dict:
    """The CPU facts bitsandbytes' CPU kernels branch on (None where this bitsandbytes cannot say)."""
    try:
        from bitsandbytes.cextension import lib
        avx512f = bool(lib.has_avx512f_cpu())
        avx512bf16 = bool(lib.has_avx512bf16_cpu())
    except (ImportError, AttributeError, RuntimeError, OSError):
        avx512f = avx512bf16 = None
    return {"machine": platform.machine(), "torch_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512f": avx512f, "avx512bf16": avx512bf16}


def dequantize_takes_faulty_path(shape, blocksize: int, features: dict | None = None) -> bool:
    """True where bitsandbytes 0.50's CPU dequantize_4bit of a tensor of `shape` gives wrong values here.

    shape: the original (unpacked) tensor's shape; blocksize: elements per absmax block.
    `features` defaults to `cpu_features()`; pass another machine's to ask about that machine.
    """
    f = features or cpu_features()
    shape = tuple(shape) if len(shape) > 1 else (1, *shape)
    rows, n = prod(shape[:-1]), shape[-1]
    if n % 2 == 1 or (blocksize >= 2048 and f["torch_capability"] == "AVX512"):
        return False  # the pure-PyTorch fallback
    avx512_kernel = bool(f["avx512f"]) and n % 16 == 0 and blocksize >= 16
    return avx512_kernel and n % blocksize != 0 and rows > 1


def dequantize_error(shape=PROBE_SHAPE, blocksize: int = PROBE_BLOCKSIZE, seed: int = 0) -> float:
    """Largest |bitsandbytes' CPU dequantize_4bit - the exact arithmetic| on unit-scale N(0, 1) weights.

    The exact arithmetic runs on bitsandbytes' own packed bytes and scales (lora_lab.nf4), so only the
    dequantize kernel is judged. 0.0 means exact; a faulty path gives errors of order 1.
    """
    import bitsandbytes.functional as bnbf

    from .nf4 import NF4Tensor, dequantize_nf4

    w = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    packed, state = bnbf.quantize_4bit(w, blocksize=blocksize, quant_type="nf4", compress_statistics=False)
    exact = dequantize_nf4(NF4Tensor.from_bitsandbytes(packed, state))
    return (bnbf.dequantize_4bit(packed, state) - exact).abs().max().item()


def describe_dequantize(features: dict | None = None) -> str:
    """One sentence, in the kit's language: which path this machine's bitsandbytes takes for a row that is not whole blocks."""
    f = features or cpu_features()
    if f["avx512f"]:
        return _("This CPU reports AVX-512F, so bitsandbytes' CPU dequantize_4bit takes its AVX-512 kernel, which is "
                 "wrong for a last dimension that is a multiple of 16 but not of the blocksize (rows after the first).")
    if f["avx512f"] is None:
        return _("This bitsandbytes does not say which CPU kernels it uses: measure it before trusting it.")
    return _("This CPU ({machine}, no AVX-512F) takes bitsandbytes' scalar CPU kernel, which is exact for every shape; "
             "AVX-512 CPUs (most servers and cloud VMs, AMD Zen 4 and later) take a faulty one.").format(
        machine=f["machine"])


def keep_4bit_weights_as_trained(model: nn.Module) -> nn.Module:
    """Turn off bitsandbytes' one-way CPU repacking of Linear4bit weights (AVX512-BF16 CPUs only; a no-op elsewhere)."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model
