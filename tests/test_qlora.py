"""lora_lab.qlora: the 4-bit base layer and QLoRALinear against bitsandbytes' Linear4bit + PEFT, on a tiny Llama."""

import copy

import peft
import pytest
import torch
from torch import nn
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

from lora_lab.lora import LoraConfig, count_parameters
from lora_lab.nf4 import NF4Tensor, dequantize_nf4, quantize_nf4
from lora_lab.qlora import (
    NF4Linear,
    QLoRALinear,
    check_compute_dtype,
    get_qlora_model,
    merge_and_dequantize,
    quantize_model,
)

bnb = pytest.importorskip("bitsandbytes")


def linear(in_features=128, out_features=96, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features)


def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)  # every 4-bit layer has in_features divisible by 64
    return LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=4, vocab_size=128))


X = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(1))  # (batch, seq, in_features)


def test_nf4linear_is_dequantize_then_matmul():
    lin = linear()
    layer = NF4Linear.from_linear(lin)
    assert (layer.in_features, layer.out_features) == (128, 96) and layer.weight.dtype == torch.uint8
    w = dequantize_nf4(quantize_nf4(lin.weight.detach()))  # (96, 128)
    assert torch.equal(layer(X), nn.functional.linear(X, w, lin.bias))
    with torch.no_grad():  # 4-bit rounding of the weight: a few percent of the output
        assert (layer(X) - lin(X)).abs().mean() < 0.1 * lin(X).abs().mean()


@pytest.mark.parametrize("double_quant", [False, True], ids=["plain", "dq"])
def test_qlora_forward_equals_bitsandbytes_linear4bit_with_peft_lora(double_quant):
    lin = linear()
    l4 = bnb.nn.Linear4bit(128, 96, bias=True, compute_dtype=torch.float32, compress_statistics=double_quant,
                           quant_type="nf4")
    l4.load_state_dict(lin.state_dict())
    l4 = l4.to("cpu")  # bitsandbytes quantizes here
    theirs = peft.get_peft_model(nn.Sequential(l4), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0"],
                                                                      init_lora_weights=False))  # B != 0
    packed, state = l4.weight.data, l4.weight.quant_state
    ours = QLoRALinear(NF4Linear(NF4Tensor.from_bitsandbytes(packed, state), lin.bias), r=4, lora_alpha=8)
    peft_layer = theirs.base_model.model[0]
    with torch.no_grad():
        ours.lora_A.weight.copy_(peft_layer.lora_A["default"].weight)
        ours.lora_B.weight.copy_(peft_layer.lora_B["default"].weight)
    assert ours.scaling == peft_layer.scaling["default"] == 2.0
    x = X.reshape(-1, 128)  # (10, 128)
    torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=0)
    if not double_quant:  # quantizing the same nn.Linear ourselves gives the same bytes
        mine = NF4Linear.from_linear(lin, double_quant=False)
        assert torch.equal(mine.weight, packed.view(-1)) and torch.equal(mine.absmax, state.absmax)


def test_gradients_reach_only_a_and_b():
    layer = QLoRALinear(linear(), r=4, lora_alpha=8, init_lora_weights=False)
    x = X.clone().requires_grad_(True)
    layer(x).pow(2).sum().backward()
    trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
    assert trainable == {"lora_A.weight", "lora_B.weight"}
    assert layer.lora_A.weight.grad is not None and layer.lora_B.weight.grad is not None
    assert layer.base_layer.bias.grad is None and x.grad is not None  # inputs still get gradients


def test_merge_into_4bit_and_dequantized_merge():
    layer = QLoRALinear(linear(), r=4, lora_alpha=8, init_lora_weights=False)
    with torch.no_grad():
        layer.lora_B.weight.mul_(0.1)  # a small ΔW, as after fine-tuning
        before = layer(X)
        plain = layer.dequantized_merge()  # W0 + ΔW in fp32: no 4-bit rounding of ΔW
        assert type(plain) is nn.Linear and plain.weight.dtype == torch.float32
        torch.testing.assert_close(plain(X), before, atol=1e-5, rtol=0)
        layer.merge()  # W0 + ΔW requantized to 4 bits
        merged = layer(X)
        assert layer.merged and layer.base_layer.weight.dtype == torch.uint8
        drift = (merged - before).abs().mean()  # W0 + ΔW rounded to 4 bits again
        assert 0 < drift < 0.1 * before.abs().mean()
        torch.testing.assert_close(layer.dequantized_merge()(X), merged, atol=1e-5, rtol=0)


def test_quantize_model_replaces_all_linear_layers_but_lm_head():
    model, reference = tiny_llama(), tiny_llama()
    ids = torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0))
    quantize_model(model)
    four_bit = [n for n, m in model.named_modules() if isinstance(m, NF4Linear)]
    assert len(four_bit) == 2 * 7 and type(model.lm_head) is nn.Linear
    with torch.no_grad():
        logits, ref = model(ids).logits, reference(ids).logits
    assert (logits - ref).abs().mean() < 0.25 * ref.abs().mean()  # random N(0, 0.02²) weights, 2 layers
    weight_bytes = lambda m: sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
    assert weight_bytes(model) < 0.5 * weight_bytes(reference)


def test_qlora_finetune_of_tiny_llama_lowers_the_loss():
    model = get_qlora_model(tiny_llama(), LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"))
    assert all(isinstance(m, NF4Linear) for n, m in model.named_modules() if n.endswith(".base_layer"))
    trainable, total = count_parameters(model)
    assert trainable == 2 * (4 * 8 * (64 + 64) + 3 * 8 * (64 + 128))  # A and B of 7 projections per layer
    assert trainable == sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert total == sum(p.numel() for p in tiny_llama().parameters()) + trainable  # two 4-bit weights a byte
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(25):
        loss = model(ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    merged = merge_and_dequantize(model)
    assert not any(isinstance(m, (NF4Linear, QLoRALinear)) for m in merged.modules())
    with torch.no_grad():
        assert merged(ids, labels=ids).loss.item() == pytest.approx(losses[-1], abs=0.3)


def test_get_qlora_model_reads_a_bitsandbytes_config():
    # transformers' defaults are fp4 without double quantization; our default is QLoRA's nf4 + double quant
    model = get_qlora_model(tiny_llama(), LoraConfig(r=4), BitsAndBytesConfig(load_in_4bit=True))
    q = model.model.layers[0].self_attn.q_proj.base_layer.quant_state
    assert q.quant_type == "fp4" and not q.double_quant
    q = get_qlora_model(tiny_llama(), LoraConfig(r=4)).model.layers[0].self_attn.q_proj.base_layer.quant_state
    assert q.quant_type == "nf4" and q.double_quant
    with pytest.raises(ValueError, match="load_in_4bit"):
        get_qlora_model(tiny_llama(), LoraConfig(r=4), BitsAndBytesConfig(load_in_8bit=True))


def test_compute_dtype(monkeypatch):
    assert check_compute_dtype("bfloat16") == torch.bfloat16 and check_compute_dtype(torch.float16) == torch.float16
    for bad in ("float64", torch.int8, "fp8"):
        with pytest.raises(ValueError, match="compute dtype"):
            check_compute_dtype(bad)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla T4")
    with pytest.raises(RuntimeError, match="Tesla T4 has no bfloat16"):
        check_compute_dtype("bfloat16", "cuda")
    layer = NF4Linear.from_linear(linear(), compute_dtype="bfloat16")
    out = layer(X)
    assert out.dtype == torch.float32  # computed in bf16, returned in the input's dtype
    assert (out - NF4Linear.from_linear(linear())(X)).abs().max() < 0.05


def test_bad_use_raises_clear_errors():
    layer = NF4Linear.from_linear(linear())
    with pytest.raises(RuntimeError, match="block scales were cast to torch.float16"):
        copy.deepcopy(layer).half()(X)  # .half() casts the fp32 scales along with everything else
    with pytest.raises(TypeError, match="QLoRALinear wraps"):
        QLoRALinear(nn.Embedding(10, 64), r=4, lora_alpha=8)
    with pytest.raises(ValueError, match="fan_in_fan_out"):
        QLoRALinear(linear(), r=4, lora_alpha=8, fan_in_fan_out=True)
    model = get_qlora_model(tiny_llama(), LoraConfig(r=4))
    with pytest.raises(ValueError, match="quantize first"):
        quantize_model(model)
