"""QA-LoRA: a LoRA adapter that folds into a group-wise INT4 base exactly, after Xu et al. 2023 (arXiv 2309.14717).

The base weight is stored as 4-bit integer codes with one scale and one zero point per group of
`qalora_group_size` neighbouring input columns (asymmetric min-max quantization, GPTQ's layout, but
with float zero points: a merge moves them by fractions of a step):

    W̃[o, j] = scales[o, g] · (q[o, j] − zeros[o, g])          j in group g, q in 0..15

The adapter's A reads the input averaged over the same groups, A: (r, G) with G = in_features /
group_size. Whatever A and B hold, ΔW is then constant across each group's columns, so adding it to
W̃ only moves that group's zero point:  W̃ + ΔW = scales · (q − (zeros − ΔW_g / scales)).  The merged
model is still INT4 — same codes, new zero points — and computes what the unmerged one did, up to
the rounding of the new zero points to their storage dtype (fp16 by default, as GPTQ keeps its scales).

The arithmetic is PEFT 0.21's (`LoraConfig(use_qalora=True, qalora_group_size=...)`, in
peft/tuners/lora/variants.py, QALoraLinearVariant): the group average is multiplied by G before A,
so ΔW_g = (α/r)·B·A·G/group_size. The authors' reference code (github.com/yuhuixu1993/qa-lora) uses
the plain average; G is a constant factor, but with Adam it acts as a learning rate on the adapter
(benchmarks/beyond_lora_table.py measures both). PEFT runs QA-LoRA on GPTQ layers only and cannot
merge it; this module runs it on its own INT4 layer and merges it.
"""

from __future__ import annotations

import dataclasses
import functools

import torch
import torch.nn.functional as F
from torch import nn

from .lora import LoraConfig, LoRALinear, inject_lora, lora_layers
from .lora_config import check_lora_args

LEVELS = 15  # 4-bit codes 0..15
GROUP_DTYPES = (torch.float16, torch.bfloat16, torch.float32)  # storage of the scales and zero points


def _check_group_size(group_size, in_features: int) -> None:
    if not isinstance(group_size, int) or isinstance(group_size, bool):
        raise TypeError(f"qalora_group_size={group_size!r} is not accepted; give a positive int that divides "
                        f"in_features={in_features}")
    if group_size <= 0 or in_features % group_size:
        ok = [d for d in range(1, in_features + 1) if in_features % d == 0]
        raise ValueError(f"qalora_group_size={group_size} is not accepted for in_features={in_features}: it must "
                         f"divide in_features; accepted: {ok}")


def quantize_int4(w: torch.Tensor, group_size: int, dtype: torch.dtype = torch.float16):
    """Group-wise asymmetric INT4 of a (out, in) weight: codes (out, in) uint8 in 0..15, scales and zeros (out, in/group_size).

    Raises ValueError for a weight that is not 2-D, a group size that does not divide in_features (the
    message lists the divisors), or a storage dtype not in GROUP_DTYPES; TypeError for a group size that is
    not an int.
    """
    if w.dim() != 2:
        raise ValueError(f"a linear weight is 2-D (out_features, in_features), got shape {tuple(w.shape)}")
    if dtype not in GROUP_DTYPES:
        raise ValueError(f"dtype={dtype} is not accepted for the scales and zero points; choose one of {GROUP_DTYPES}")
    _check_group_size(group_size, w.shape[1])
    groups = w.detach().float().unflatten(1, (-1, group_size))  # (out, G, gs)
    lo, hi = groups.amin(-1), groups.amax(-1)  # (out, G)
    # constants are rounded to their storage dtype first, then the codes are chosen against the stored values
    scales = ((hi - lo) / LEVELS).to(dtype).clamp(min=torch.finfo(dtype).tiny)  # a constant group: any scale works
    zeros = (-lo / scales.float()).to(dtype)  # float zero points: the group's minimum sits at code 0
    q = torch.round(groups / scales.float()[..., None] + zeros.float()[..., None]).clamp(0, LEVELS)
    return q.to(torch.uint8).flatten(1), scales, zeros  # (out, in), (out, G), (out, G)


def dequantize_int4(codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """scales · (codes − zeros), group by group, in fp32: (out, in)."""
    group_size = codes.shape[1] // scales.shape[1]
    q = codes.float().unflatten(1, (-1, group_size))  # (out, G, gs)
    return (scales.float()[..., None] * (q - zeros.float()[..., None])).flatten(1)


class Int4Linear(nn.Module):
    """A frozen linear layer stored as group-wise INT4: two codes per byte, one scale and zero point per group."""

    def __init__(self, codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = codes.shape
        self.group_size = self.in_features // scales.shape[1]
        flat = codes.reshape(-1)
        if flat.numel() % 2:
            flat = F.pad(flat, (0, 1))
        # a uint8 Parameter that never trains, so count_parameters counts two weights per byte
        self.weight = nn.Parameter((flat[0::2] << 4) | flat[1::2], requires_grad=False)  # (out * in / 2,) uint8
        self.register_buffer("scales", scales)  # (out, G)
        self.register_buffer("zeros", zeros)  # (out, G): float zero points, what a QA-LoRA merge moves
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)  # (out,)

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 32, dtype: torch.dtype = torch.float16) -> "Int4Linear":
        """Quantize an nn.Linear's weight (its bias kept as is)."""
        return cls(*quantize_int4(linear.weight, group_size, dtype), linear.bias)

    @property
    def codes(self) -> torch.Tensor:
        """The 4-bit codes, unpacked: (out, in) uint8."""
        pairs = torch.stack([self.weight >> 4, self.weight & 0xF], dim=1).reshape(-1)
        return pairs[: self.out_features * self.in_features].view(self.out_features, self.in_features)

    @property
    def bits_per_weight(self) -> float:
        """4 bits per code plus the scale and zero point of each group: 4 + 2·16/group_size with fp16 constants."""
        return 4 + 2 * 8 * self.scales.element_size() / self.group_size

    def dequantize(self) -> torch.Tensor:
        """The weight, (out_features, in_features), in fp32."""
        return dequantize_int4(self.codes, self.scales, self.zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.float()
        return F.linear(x.float(), self.dequantize(), bias).to(x.dtype)  # (..., out)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"group_size={self.group_size}, constants={self.scales.dtype}, bits_per_weight={self.bits_per_weight:g}")


def pool_groups(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """The mean of each group of `group_size` neighbouring features: (..., in) -> (..., in / group_size)."""
    return x.unflatten(-1, (-1, group_size)).mean(-1)


class QALoRALinear(LoRALinear):
    """INT4 base (an nn.Linear is quantized first) plus B·A on the group-pooled input: base(x) + B(A(pool(x))) · α/r.

    A: (r, G), B: (out_features, r), G = in_features / qalora_group_size. Raises ValueError for a group
    size that does not divide in_features, r > min(G, out_features), or an Int4Linear quantized with
    another group size; TypeError for a base that is neither nn.Linear nor Int4Linear.
    """

    def __init__(self, base_layer: nn.Module, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                 init_lora_weights: bool | str = "gaussian", use_rslora: bool = False, fan_in_fan_out: bool = False,
                 qalora_group_size: int = 32, dtype: torch.dtype = torch.float16):
        check_lora_args(r, lora_alpha, lora_dropout, init_lora_weights)
        if isinstance(base_layer, nn.Linear):
            base_layer = Int4Linear.from_linear(base_layer, qalora_group_size, dtype)
        if not isinstance(base_layer, Int4Linear):
            raise TypeError(f"base_layer={type(base_layer).__name__} is not accepted; QALoRALinear wraps an nn.Linear "
                            "(which it quantizes to group-wise INT4) or an Int4Linear")
        if base_layer.group_size != qalora_group_size:
            raise ValueError(f"qalora_group_size={qalora_group_size} is not accepted for an Int4Linear quantized with "
                             f"group_size={base_layer.group_size}: the adapter's groups must be the quantizer's")
        if fan_in_fan_out:
            raise ValueError("fan_in_fan_out=True is not accepted: an INT4 base is always stored (out, in)")
        groups = base_layer.in_features // qalora_group_size
        if r > min(groups, base_layer.out_features):
            raise ValueError(f"r={r} is not accepted for QA-LoRA on a {base_layer.in_features}→{base_layer.out_features} "
                             f"layer with qalora_group_size={qalora_group_size}: A reads {groups} pooled inputs, so r "
                             f"must be at most min(in_features / qalora_group_size, out_features) = "
                             f"{min(groups, base_layer.out_features)}")
        super().__init__(base_layer, r, lora_alpha, lora_dropout, False, use_rslora)
        self.qalora_group_size = qalora_group_size
        self.pool_scale = groups  # PEFT multiplies the group mean by G; the reference code by 1
        self.lora_A = nn.Linear(groups, r, bias=False, device=base_layer.weight.device)  # A: (r, G)
        self.reset_lora_parameters(init_lora_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = W̃·x + (α/r)·B·A·pool(x) for x: (..., in_features), pool(x): (..., G)."""
        result = self.base_layer(x)  # (..., out)
        if self.merged:  # ΔW already sits in the zero points
            return result
        x = x.to(self.lora_A.weight.dtype)
        pooled = pool_groups(self.lora_dropout(x), self.qalora_group_size) * self.pool_scale  # (..., G)
        return (result + self.lora_B(self.lora_A(pooled)) * self.scaling).to(result.dtype)

    def get_group_delta(self) -> torch.Tensor:
        """ΔW per group, (out_features, G): (α/r)·B·A·pool_scale / group_size (the pool's mean spreads A over a group)."""
        return self.lora_B.weight @ self.lora_A.weight * (self.scaling * self.pool_scale / self.qalora_group_size)

    def get_delta_weight(self) -> torch.Tensor:
        """ΔW, (out_features, in_features): each group's value repeated over its columns."""
        return self.get_group_delta().repeat_interleave(self.qalora_group_size, dim=1)

    def merge(self) -> None:
        """zeros −= ΔW_g / scales: the codes stay, the model stays INT4; a no-op when already merged."""
        if not self.merged:
            self._shift_zeros(-1)
            self.merged = True

    def unmerge(self) -> None:
        """zeros += ΔW_g / scales, undoing merge() up to the rounding of the zero points; a no-op when not merged."""
        if self.merged:
            self._shift_zeros(+1)
            self.merged = False

    def _shift_zeros(self, sign: int) -> None:
        base = self.base_layer
        with torch.no_grad():
            shift = self.get_group_delta().float() / base.scales.float()  # (out, G), in units of one code step
            base.zeros.copy_((base.zeros.float() + sign * shift).to(base.zeros.dtype))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", qalora_group_size={self.qalora_group_size}"


def get_qalora_model(model: nn.Module, lora_config: LoraConfig, qalora_group_size: int = 32,
                     dtype: torch.dtype = torch.float16) -> nn.Module:
    """Quantize every target layer to group-wise INT4 and put a QALoRALinear on it, in place; returns the model.

    The same as inject_lora(model, LoraConfig(..., use_qalora=True, qalora_group_size=...)), with the
    scales and zero points stored in `dtype`.
    """
    if lora_layers(model):
        raise ValueError("the model already has LoRA layers: start from a fresh model")
    config = dataclasses.replace(lora_config, use_qalora=True, qalora_group_size=qalora_group_size)
    layer_cls = functools.partial(QALoRALinear, qalora_group_size=qalora_group_size, dtype=dtype)
    return inject_lora(model, config, layer_cls=layer_cls)
