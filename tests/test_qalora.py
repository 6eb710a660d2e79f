"""lora_lab.qalora: group-wise INT4, the pooled adapter, its exact merge into the zero points, and PEFT 0.21's QA-LoRA arithmetic."""

import copy

import peft
import pytest
import torch
from peft.tuners.lora import Linear as PeftLinear
from peft.tuners.lora.variants import QALoraLinearVariant
from torch import nn

from lora_lab import LoraConfig, count_parameters, merge_lora
from lora_lab.lora import lora_layers
from lora_lab.qalora import (
    Int4Linear,
    QALoRALinear,
    dequantize_int4,
    get_qalora_model,
    pool_groups,
    quantize_int4,
)


def linear(out_features=24, in_features=64, bias=True, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    layer = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        layer.weight.mul_(3)
    return layer


def trained(layer: QALoRALinear, seed=1) -> QALoRALinear:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # B starts at zero; pretend it trained
        layer.lora_B.weight.copy_(torch.randn(layer.lora_B.weight.shape, generator=g) * 0.05)
    return layer


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin0, self.lin1 = nn.Linear(64, 32), nn.Linear(32, 16)

    def forward(self, x):
        return self.lin1(torch.relu(self.lin0(x)))


# ----------------------------------------------------------------------------- INT4


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_int4_codes_scales_and_zeros(dtype):
    w = linear().weight.detach()
    codes, scales, zeros = quantize_int4(w, 16, dtype)
    assert codes.shape == (24, 64) and codes.dtype == torch.uint8 and int(codes.max()) <= 15
    assert scales.shape == zeros.shape == (24, 4) and scales.dtype == zeros.dtype == dtype
    groups = w.unflatten(1, (4, 16))
    assert torch.equal(codes.unflatten(1, (4, 16)).amin(-1), torch.zeros(24, 4, dtype=torch.uint8))  # min -> code 0
    assert torch.equal(codes.unflatten(1, (4, 16)).amax(-1), torch.full((24, 4), 15, dtype=torch.uint8))  # max -> 15
    err = (dequantize_int4(codes, scales, zeros) - w).unflatten(1, (4, 16)).abs().amax(-1)
    step = (groups.amax(-1) - groups.amin(-1)) / 15
    slack = 0.51 if dtype == torch.float32 else 0.52  # rounding to the nearest code, plus rounding of the constants
    assert torch.all(err <= slack * step + 1e-7)


def test_int4_constant_group_and_bad_inputs():
    w = torch.zeros(2, 8)
    w[1, 4:] = 0.25
    codes, scales, zeros = quantize_int4(w, 4)
    assert torch.equal(dequantize_int4(codes, scales, zeros), w)  # a constant group comes back exactly
    with pytest.raises(ValueError, match=r"qalora_group_size=3 .* in_features=8.*accepted: \[1, 2, 4, 8\]"):
        quantize_int4(w, 3)
    with pytest.raises(ValueError, match="qalora_group_size=0"):
        quantize_int4(w, 0)
    with pytest.raises(TypeError, match="qalora_group_size=4.0"):
        quantize_int4(w, 4.0)
    with pytest.raises(ValueError, match="dtype=torch.int8"):
        quantize_int4(w, 4, torch.int8)


def test_int4_linear_packs_two_codes_per_byte():
    lin = linear(bias=True)
    layer = Int4Linear.from_linear(lin, 16)
    codes, scales, zeros = quantize_int4(lin.weight, 16)
    assert torch.equal(layer.codes, codes) and layer.weight.numel() == 24 * 64 // 2
    assert layer.bits_per_weight == 4 + 32 / 16  # fp16 scale and zero point per 16 weights
    assert count_parameters(nn.Sequential(layer)) == (0, 24 * 64 + 24)  # two weights per byte, bias fp32
    x = torch.randn(3, 64)
    assert torch.allclose(layer(x), x @ dequantize_int4(codes, scales, zeros).T + lin.bias, atol=1e-5)


# ----------------------------------------------------------------------------- the adapter and its merge


def test_forward_is_base_plus_pooled_adapter():
    layer = trained(QALoRALinear(linear(), r=3, lora_alpha=6, qalora_group_size=16))
    assert layer.lora_A.weight.shape == (3, 4) and layer.lora_B.weight.shape == (24, 3)
    x = torch.randn(2, 5, 64)
    pooled = x.view(2, 5, 4, 16).mean(-1) * 4  # PEFT's pooled input: group mean × G
    want = layer.base_layer(x) + pooled @ layer.lora_A.weight.T @ layer.lora_B.weight.T * 2.0
    assert torch.allclose(layer(x), want, atol=1e-5)
    assert torch.allclose(pool_groups(x, 16), x.view(2, 5, 4, 16).mean(-1))
    # ΔW is constant over each group's columns, and applying it as a weight gives the same output
    delta = layer.get_delta_weight()
    assert delta.shape == (24, 64) and torch.all(delta.unflatten(1, (4, 16)).std(-1) < 1e-7)
    assert torch.allclose(layer(x), layer.base_layer(x) + x @ delta.T, atol=1e-5)


def test_merge_into_zero_points_is_exact_with_fp32_constants():
    layer = trained(QALoRALinear(linear(), r=4, lora_alpha=8, qalora_group_size=16, dtype=torch.float32))
    codes = layer.base_layer.codes.clone()
    x = torch.randn(7, 64)
    with torch.no_grad():
        before = layer(x)
        want_w = layer.base_layer.dequantize() + layer.get_delta_weight()
        layer.merge()
        assert torch.equal(layer.base_layer.codes, codes)  # still the same INT4 codes
        assert torch.allclose(layer.base_layer.dequantize(), want_w, atol=1e-6)
        assert torch.allclose(layer(x), before, atol=1e-5)
        layer.merge()  # a no-op the second time
        assert torch.allclose(layer(x), before, atol=1e-5)
        layer.unmerge()
        assert torch.allclose(layer(x), before, atol=1e-5)


def test_merge_with_fp16_zero_points_errs_only_by_their_rounding():
    layer = trained(QALoRALinear(linear(), r=4, lora_alpha=8, qalora_group_size=16), seed=3)
    base = layer.base_layer
    with torch.no_grad():
        want_w = base.dequantize() + layer.get_delta_weight()
        exact_zeros = base.zeros.float() - layer.get_group_delta() / base.scales.float()
        layer.merge()
    # the merged zero point is the exact one rounded to fp16: at most half a unit in its last place
    ulp = torch.finfo(torch.float16).eps * exact_zeros.abs().clamp(min=2**-14)
    assert torch.all((base.zeros.float() - exact_zeros).abs() <= ulp / 2 + 1e-12)
    bound = (base.scales.float() * ulp / 2).repeat_interleave(16, dim=1)  # what that moves each weight
    assert torch.all((base.dequantize() - want_w).abs() <= bound + 1e-6)


def test_model_merge_unloads_to_an_int4_model():
    torch.manual_seed(0)
    model = get_qalora_model(MLP(), LoraConfig(r=2, lora_alpha=4, target_modules=["lin0", "lin1"]), 16,
                             dtype=torch.float32)
    for _, layer in lora_layers(model):
        trained(layer)
    x = torch.randn(5, 64)
    with torch.no_grad():
        before = model(x)
        merged = merge_lora(copy.deepcopy(model), unload=True)
        assert not lora_layers(merged) and all(isinstance(m, Int4Linear) for m in (merged.lin0, merged.lin1))
        assert torch.allclose(merged(x), before, atol=1e-5)
    trainable, _ = count_parameters(model)
    assert trainable == 2 * (64 // 16) + 32 * 2 + 2 * (32 // 16) + 16 * 2  # only A (r × G) and B (out × r)


# ----------------------------------------------------------------------------- PEFT 0.21's QA-LoRA


def peft_qalora(layer: QALoRALinear) -> PeftLinear:
    """PEFT's lora.Linear with its QALoraLinearVariant, over an nn.Linear holding our dequantized INT4 weight.

    PEFT attaches this variant to GPTQ layers only; the variant's forward only adds the adapter's
    output to the base layer's, so the same weight in a plain nn.Linear compares the same arithmetic.
    """
    plain = nn.Linear(layer.in_features, layer.out_features, bias=layer.base_layer.bias is not None)
    with torch.no_grad():
        plain.weight.copy_(layer.base_layer.dequantize())
        if plain.bias is not None:
            plain.bias.copy_(layer.base_layer.bias)
    config = peft.LoraConfig(r=layer.r, lora_alpha=layer.lora_alpha, use_qalora=True,
                             qalora_group_size=layer.qalora_group_size)
    theirs = PeftLinear(plain, "default", r=layer.r, lora_alpha=layer.lora_alpha,
                        config=peft.LoraConfig(r=layer.r, lora_alpha=layer.lora_alpha))
    theirs.lora_variant["default"] = QALoraLinearVariant()
    QALoraLinearVariant.init(theirs, "default", config)  # swaps lora_A for an (r, G) one, as on a GPTQ layer
    with torch.no_grad():
        theirs.lora_A["default"].weight.copy_(layer.lora_A.weight)
        theirs.lora_B["default"].weight.copy_(layer.lora_B.weight)
    return theirs


def test_same_outputs_and_gradients_as_peft_qalora_variant():
    ours = trained(QALoRALinear(linear(), r=4, lora_alpha=8, qalora_group_size=16))
    theirs = peft_qalora(ours)
    assert theirs.lora_A["default"].weight.shape == ours.lora_A.weight.shape == (4, 4)
    x = torch.randn(3, 6, 64)
    y_ours, y_theirs = ours(x), theirs(x)
    assert torch.allclose(y_ours, y_theirs, atol=1e-6)
    (y_ours**2).sum().backward(), (y_theirs**2).sum().backward()
    assert torch.allclose(ours.lora_A.weight.grad, theirs.lora_A["default"].weight.grad, rtol=1e-5, atol=1e-6)
    assert torch.allclose(ours.lora_B.weight.grad, theirs.lora_B["default"].weight.grad, rtol=1e-5, atol=1e-6)


def test_peft_ignores_use_qalora_on_a_plain_linear_layer():
    # why the comparison above installs the variant by hand: on nn.Linear, PEFT 0.21 builds plain LoRA
    model = peft.get_peft_model(MLP(), peft.LoraConfig(r=2, target_modules=["lin0"], use_qalora=True,
                                                      qalora_group_size=16))
    assert model.base_model.model.lin0.lora_A["default"].weight.shape == (2, 64)  # not (2, 64 / 16)


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_name_the_value_and_what_is_accepted():
    with pytest.raises(ValueError, match=r"qalora_group_size=24 is not accepted for in_features=64.*accepted: \[1, 2, 4"):
        QALoRALinear(linear(), r=2, lora_alpha=4, qalora_group_size=24)
    with pytest.raises(ValueError, match=r"r=5 is not accepted .* at most .* = 4"):
        QALoRALinear(linear(), r=5, lora_alpha=4, qalora_group_size=16)
    with pytest.raises(ValueError, match="qalora_group_size=32 .* group_size=16"):
        QALoRALinear(Int4Linear.from_linear(linear(), 16), r=2, lora_alpha=4, qalora_group_size=32)
    with pytest.raises(TypeError, match="base_layer=Conv1d"):
        QALoRALinear(nn.Conv1d(4, 4, 1), r=2, lora_alpha=4)
    model = MLP()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="qalora_group_size=24"):  # lin1 has in_features 32
        get_qalora_model(model, LoraConfig(r=1, lora_alpha=2, target_modules=["lin0", "lin1"]), 24)
    assert not lora_layers(model) and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
