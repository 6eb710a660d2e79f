"""QLoRA: a frozen 4-bit NF4 base weight under a trainable LoRA adapter (Dettmers et al. 2023,
arXiv 2305.14314): dequantize to the compute dtype, matmul, add B·A·x.

The 4-bit matmul is its own autograd function, as bitsandbytes' MatMul4Bit is: it keeps only the
4-bit weight for the backward pass and dequantizes it a second time there."""

import dataclasses

import torch
import torch.nn.functional as F
from torch import nn

from . import base4bit
from .lora import LoraConfig, LoRALinear, inject_lora, lora_layers
from .merge import merge_lora
from .nf4 import NF4Tensor, dequantize_nf4, quantize_4bit

COMPUTE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_compute_dtype(compute_dtype: torch.dtype | str, device: torch.device | str = "cpu") -> torch.dtype:
    """`bnb_4bit_compute_dtype` as a torch dtype, if a matmul in it runs on `device`; a clear error if not."""
    name = str(compute_dtype).removeprefix("torch.")  # torch.bfloat16 or "bfloat16", as transformers takes it
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"compute dtype {compute_dtype!r} is not accepted; choose one of {tuple(COMPUTE_DTYPES)}")
    dtype, device = COMPUTE_DTYPES[name], torch.device(device)
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise RuntimeError(f"{torch.cuda.get_device_name(device)} has no bfloat16 (a T4 has none): "
                           "use compute dtype float16 or float32")
    try:  # a 2x2 matmul: the cheapest proof that this device can compute in this dtype
        F.linear(torch.ones(2, 2, dtype=dtype, device=device), torch.ones(2, 2, dtype=dtype, device=device))
    except RuntimeError as e:
        raise RuntimeError(f"a {device.type} matmul in {name} fails here ({e}); choose another compute dtype") from e
    return dtype


class MatMulNF4(torch.autograd.Function):
    """y = x · dequant(W)ᵀ + b, keeping for backward the 4-bit W, never its dequantized float copy.

    Plain `F.linear(x, w)` makes autograd save w: it needs w for the input gradient, dy · w. For a
    4-bit layer w is a fresh full-precision tensor (4 or 2 bytes per weight instead of about 0.52),
    held from the forward until the backward. This function saves the packed codes and block scales
    instead, which the layer holds anyway, and rebuilds w in `backward`: one more dequantization per
    layer and step, in exchange for no float weight between forward and backward. The base weight
    gets no gradient; a bias that requires one (PEFT's bias="all") gets it.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, q: NF4Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        w = dequantize_nf4(q, x.dtype)  # (out, in) in the compute dtype, freed when forward returns
        ctx.save_for_backward(q.packed, q.absmax, q.offset, q.absmax2)  # the layer's own tensors: no new memory
        ctx.q = dataclasses.replace(q, packed=None, absmax=None, offset=None, absmax2=None)  # shape, dtype, blocksize
        return F.linear(x, w, bias)  # (..., out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_x = grad_bias = None
        if ctx.needs_input_grad[0]:
            packed, absmax, offset, absmax2 = ctx.saved_tensors
            q = dataclasses.replace(ctx.q, packed=packed, absmax=absmax, offset=offset, absmax2=absmax2)
            grad_x = torch.matmul(grad_out, dequantize_nf4(q, grad_out.dtype))  # (..., out) @ (out, in): the second dequantize
        if ctx.needs_input_grad[2]:
            grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0)  # (out,)
        return grad_x, None, grad_bias


def matmul_nf4(x: torch.Tensor, q: NF4Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x: (..., in) in the compute dtype, q: an (out, in) NF4Tensor, bias: (out,) or None -> (..., out)."""
    if x.shape[-1] != q.shape[1]:
        raise ValueError(f"x has {x.shape[-1]} features in its last dimension, the weight takes {q.shape[1]}")
    return MatMulNF4.apply(x, q, bias)


class NF4Linear(nn.Module):
    """A frozen linear layer stored in 4 bits, like bitsandbytes' Linear4bit: dequantize, then matmul (MatMulNF4)."""

    def __init__(self, weight: NF4Tensor, bias: torch.Tensor | None = None,
                 compute_dtype: torch.dtype | str = torch.float32):
        super().__init__()
        if len(weight.shape) != 2:
            raise ValueError(f"a linear weight is 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
        self.out_features, self.in_features = weight.shape
        self.compute_dtype = check_compute_dtype(compute_dtype, weight.device)
        # a uint8 Parameter like bitsandbytes' Params4bit: counted as two weights per byte, never trained
        self.weight = nn.Parameter(weight.packed, requires_grad=False)  # (out * in / 2,) uint8
        self._store(weight)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)  # (out,)

    def _store(self, q: NF4Tensor) -> None:
        self.weight.data = q.packed
        self.register_buffer("absmax", q.absmax)  # (blocks,) fp32, or uint8 codes with double quant
        self.register_buffer("offset", q.offset)  # () fp32, or None
        self.register_buffer("absmax2", q.absmax2)  # (ceil(blocks/256),) fp32, or None
        self.blocksize, self.quant_type, self.weight_dtype = q.blocksize, q.quant_type, q.dtype

    @classmethod
    def from_linear(cls, linear: nn.Linear, quant_type: str = "nf4", double_quant: bool = True,
                    compute_dtype: torch.dtype | str = torch.float32, blocksize: int = 64) -> "NF4Linear":
        """Quantize an nn.Linear's weight (bias kept as is)."""
        q = quantize_4bit(linear.weight.detach(), blocksize, double_quant, quant_type)
        return cls(q, linear.bias, compute_dtype)

    @property
    def quant_state(self) -> NF4Tensor:
        """The stored weight as an NF4Tensor (shares this layer's tensors)."""
        for t in (self.absmax, self.offset, self.absmax2):
            if t is not None and t.dtype not in (torch.float32, torch.uint8):
                raise RuntimeError(f"the 4-bit block scales were cast to {t.dtype} (by model.to(dtype) or .half()?), "
                                   "which loses them: quantize after casting, or set the compute dtype instead")
        # the codes may be stored in another layout or dtype (lora_lab.fsdp stores them as rows of whole blocks,
        # optionally viewed as floats): the bytes are the same, read back flat as uint8
        packed = self.weight.data.view(torch.uint8).reshape(-1)  # (out * in / 2,) uint8
        offset = None if self.offset is None else self.offset.reshape(())
        return NF4Tensor(packed, self.absmax, self.blocksize, torch.Size((self.out_features, self.in_features)),
                         self.weight_dtype, self.quant_type, offset, self.absmax2)

    def dequantize(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight, (out_features, in_features), in `dtype` (default: the compute dtype)."""
        return dequantize_nf4(self.quant_state, dtype or self.compute_dtype)

    def requantize_(self, weight: torch.Tensor) -> None:
        """Store a new full-precision weight with this layer's 4-bit settings."""
        self._store(quantize_4bit(weight.detach().to(self.weight_dtype), self.blocksize, self.absmax2 is not None,
                                  self.quant_type))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # not F.linear(x, self.dequantize()): autograd would keep that float weight until backward
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return matmul_nf4(x.to(self.compute_dtype), self.quant_state, bias).to(x.dtype)  # (..., out) in x's dtype

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"quant_type={self.quant_type}, double_quant={self.absmax2 is not None}, blocksize={self.blocksize}, "
                f"compute_dtype={self.compute_dtype}")


class QLoRALinear(LoRALinear):
    """LoRA over a frozen 4-bit base: an NF4Linear (an nn.Linear is quantized first) plus trainable A and B."""

    def __init__(self, base_layer: nn.Module, r: int, lora_alpha: float, lora_dropout: float = 0.0,
                 init_lora_weights: bool | str = "gaussian", use_rslora: bool = False, fan_in_fan_out: bool = False,
                 quant_type: str = "nf4", double_quant: bool = True, compute_dtype: torch.dtype | str = torch.float32):
        if isinstance(base_layer, nn.Linear):
            base_layer = NF4Linear.from_linear(base_layer, quant_type, double_quant, compute_dtype)
        if not isinstance(base_layer, NF4Linear):
            raise TypeError(f"base_layer={type(base_layer).__name__} is not accepted; QLoRALinear wraps an "
                            "NF4Linear or an nn.Linear (which it quantizes)")
        if fan_in_fan_out:
            raise ValueError("fan_in_fan_out=True is not accepted: a 4-bit base is always stored (out, in)")
        # forward is LoRALinear's: base_layer(x) + lora_B(lora_A(dropout(x))) * scaling, LoRA in fp32
        super().__init__(base_layer, r, lora_alpha, lora_dropout, init_lora_weights, use_rslora, fan_in_fan_out)

    def _add_to_base_weight(self, delta: torch.Tensor) -> None:
        # merge()/unmerge() into the 4-bit weight: dequantize, add, requantize. Each round trip
        # rounds again, so unmerge() does not give back the original 4-bit codes exactly.
        with torch.no_grad():
            self.base_layer.requantize_(self.base_layer.dequantize(torch.float32) + delta.float())

    def dequantized_merge(self, dtype: torch.dtype | None = None) -> nn.Linear:
        """A plain nn.Linear holding W0 + ΔW in `dtype` (default: the base's original dtype): no 4-bit rounding of ΔW."""
        base = self.base_layer
        dtype = dtype or base.weight_dtype
        with torch.no_grad():
            w = base.dequantize(torch.float32)  # (out, in)
            if not self.merged:
                w = w + self.get_delta_weight().float()
            linear = nn.Linear(self.in_features, self.out_features, bias=base.bias is not None,
                               device=w.device, dtype=dtype)
            linear.weight.copy_(w)
            if base.bias is not None:
                linear.bias.copy_(base.bias)
        return linear


def quantize_model(model: nn.Module, quant_type: str = "nf4", double_quant: bool = True,
                   compute_dtype: torch.dtype | str = torch.float32, skip: tuple[str, ...] = ("lm_head",),
                   blocksize: int = 64) -> nn.Module:
    """Replace every nn.Linear whose name (or last part of it) is not in `skip` by an NF4Linear, in place."""
    if lora_layers(model):
        raise ValueError("the model already has LoRA layers: quantize first, then inject LoRA (get_qlora_model)")
    names = [name for name, m in model.named_modules()
             if type(m) is nn.Linear and name not in skip and name.rsplit(".", 1)[-1] not in skip]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear outside skip={skip} to quantize")
    for name in names:
        parent, _, child = name.rpartition(".")
        layer = model.get_submodule(name)
        setattr(model.get_submodule(parent), child,
                NF4Linear.from_linear(layer, quant_type, double_quant, compute_dtype, blocksize))
    return model.requires_grad_(False)


def get_qlora_model(model: nn.Module, lora_config: LoraConfig | None = None, quantization_config=None) -> nn.Module:
    """QLoRA in one call: quantize the linear layers to 4 bits, then put QLoRALinear adapters on the targets."""
    # quantization_config: anything with BitsAndBytesConfig's fields (transformers' own class works);
    # None means QLoRA's settings, not transformers' defaults (fp4, no double quant)
    qc = quantization_config
    if qc is not None and not getattr(qc, "load_in_4bit", False):
        raise ValueError("quantization_config does not ask for 4-bit weights (load_in_4bit is not True)")
    quantize_model(model,
                   quant_type=getattr(qc, "bnb_4bit_quant_type", "nf4"),
                   double_quant=getattr(qc, "bnb_4bit_use_double_quant", True),
                   compute_dtype=getattr(qc, "bnb_4bit_compute_dtype", None) or torch.float32,
                   skip=tuple(getattr(qc, "llm_int8_skip_modules", None) or ("lm_head",)))
    # QLoRA's reference script: r=64, alpha=16, every linear layer but lm_head
    lora_config = lora_config or LoraConfig(r=64, lora_alpha=16, target_modules="all-linear")
    return inject_lora(model, lora_config, layer_cls=QLoRALinear)


def merge_and_dequantize(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every QLoRALinear by the plain nn.Linear of its dequantized_merge(), in place.

    dtype: the merged layers' dtype (default: each base's original one); given, the rest of the
    model's float weights are cast to it as well (4-bit layers left aside), so the model runs in one
    dtype. Once no 4-bit layer is left, its quantization_config is dropped (base4bit.forget_quantization).
    """
    layers = [(name, layer) for name, layer in lora_layers(model) if isinstance(layer, QLoRALinear)]
    if not layers:
        if lora_layers(model):  # LoRA over another 4-bit base, e.g. bitsandbytes' Linear4bit: the same exact merge
            merge_lora(model, unload=True, dequantize=True)
        else:
            raise ValueError(f"{type(model).__name__} has no LoRA layers to merge; call get_qlora_model or inject_lora first")
    for name, layer in layers:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, layer.dequantized_merge(dtype))
    for attr in ("lora_config", "lora_base_fingerprint"):
        if hasattr(model, attr):
            delattr(model, attr)
    if dtype is not None:
        _cast_floats(model, dtype)
    base4bit.forget_quantization(model)
    return model


def _cast_floats(model: nn.Module, dtype: torch.dtype) -> None:
    # model.to(dtype) would also cast the block scales of layers still in 4 bits, which loses them
    for module in model.modules():
        if base4bit.is_4bit(module):
            continue
        for tensors in (module._parameters, module._buffers):
            for key, t in tensors.items():
                if t is not None and t.is_floating_point() and t.dtype != dtype:
                    t.data = t.data.to(dtype)
    if getattr(model, "config", None) is not None and hasattr(model.config, "dtype"):
        model.config.dtype = dtype
