"""lora_lab.qlora: the 4-bit base layer and QLoRALinear against bitsandbytes' Linear4bit + PEFT, on a tiny Llama."""

import copy

import peft
import pytest
import torch
from torch import nn
from transformers import BitsAndBytesConfig, LlamaConfig, LlamaForCausalLM

import lora_lab.qlora
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
from lora_lab.step_memory import kept_for_backward

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


def bnb_and_ours(double_quant=True, in_features=256, out_features=128):
    """bitsandbytes' Linear4bit and our NF4Linear holding the same bytes, in train mode.

    Widths are multiples of 64 and the layer trains: on AVX-512 CPUs bitsandbytes 0.50.2 dequantizes
    wrongly when the last dimension is not a multiple of the blocksize, and repacks its weight in eval mode.
    """
    lin = linear(in_features, out_features)
    l4 = bnb.nn.Linear4bit(in_features, out_features, bias=True, compute_dtype=torch.float32,
                           compress_statistics=double_quant, quant_type="nf4")
    l4.load_state_dict(lin.state_dict())
    l4 = l4.to("cpu").train()  # bitsandbytes quantizes here
    ours = NF4Linear(NF4Tensor.from_bitsandbytes(l4.weight.data, l4.weight.quant_state), lin.bias)
    return lin.requires_grad_(False), l4, ours


def test_4bit_matmul_keeps_only_the_4bit_weight_for_backward():
    lin, l4, ours = bnb_and_ours()
    x = torch.randn(2, 5, 256, generator=torch.Generator().manual_seed(2), requires_grad=True)
    fp32_bytes = 128 * 256 * 4  # the weight in full precision
    kept = {name: kept_for_backward(lambda m=m: m(x), m) for name, m in
            (("nn.Linear", lin), ("NF4Linear", ours), ("Linear4bit", l4))}
    kept["dequantize + F.linear"] = kept_for_backward(lambda: nn.functional.linear(x, ours.dequantize(), ours.bias), ours)
    total = {name: sum(r["bytes"] for r in rows) for name, rows in kept.items()}
    new = {name: sum(r["bytes"] for r in rows if not r["own"]) for name, rows in kept.items()}
    # nn.Linear keeps its own fp32 weight; dequantize-then-matmul keeps a fresh fp32 copy of it
    assert total["nn.Linear"] == fp32_bytes and new["nn.Linear"] == 0
    assert new["dequantize + F.linear"] == fp32_bytes
    # ours: the packed codes and block scales the layer holds anyway, nothing else
    assert max(r["bytes"] for r in kept["NF4Linear"]) == 128 * 256 // 2
    assert all(r["own"] and r["via"] == "saved" for r in kept["NF4Linear"])
    assert total["NF4Linear"] == ours.quant_state.nbytes == 16_908
    # bitsandbytes keeps its packed weight and QuantState (code tables included) on the Function's context
    assert {r["via"] for r in kept["Linear4bit"]} == {"MatMul4BitBackward"} and new["Linear4bit"] == 0
    assert total["NF4Linear"] <= total["Linear4bit"] and new["NF4Linear"] <= new["Linear4bit"]


@pytest.mark.parametrize("double_quant", [False, True], ids=["plain", "dq"])
def test_qlora_gradients_equal_bitsandbytes_with_peft_exactly(double_quant):
    _, l4, base = bnb_and_ours(double_quant)
    theirs = peft.get_peft_model(nn.Sequential(l4), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["0"],
                                                                      init_lora_weights=False))
    peft_layer = theirs.base_model.model[0]
    ours = QLoRALinear(base, r=4, lora_alpha=8)
    with torch.no_grad():
        ours.lora_A.weight.copy_(peft_layer.lora_A["default"].weight)
        ours.lora_B.weight.copy_(peft_layer.lora_B["default"].weight)  # B != 0
    x = torch.randn(2, 5, 256, generator=torch.Generator().manual_seed(3))
    grad = torch.randn(2, 5, 128, generator=torch.Generator().manual_seed(4))
    x_ours, x_theirs = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    y_ours.backward(grad)
    y_theirs.backward(grad)
    assert torch.equal(y_ours, y_theirs)  # the same dequantized weight, the same matmuls
    assert torch.equal(x_ours.grad, x_theirs.grad)
    assert torch.equal(ours.lora_A.weight.grad, peft_layer.lora_A["default"].weight.grad)
    assert torch.equal(ours.lora_B.weight.grad, peft_layer.lora_B["default"].weight.grad)


def test_backward_dequantizes_again(monkeypatch):
    layer = NF4Linear.from_linear(linear(256, 128))
    w = layer.dequantize()  # (128, 256)
    calls = []
    monkeypatch.setattr(lora_lab.qlora, "dequantize_nf4", lambda *a: calls.append(1) or dequantize_nf4(*a))
    x = torch.randn(3, 256, requires_grad=True)
    y = layer(x)
    assert len(calls) == 1
    y.backward(torch.ones_like(y))
    assert len(calls) == 2  # the price of keeping no float weight: one more dequantization per backward
    assert torch.equal(x.grad, torch.ones(3, 128) @ w)
    with torch.no_grad():
        layer(x)
    assert len(calls) == 3


def test_a_trainable_bias_gets_its_gradient():
    layer = NF4Linear.from_linear(linear(256, 128))
    layer.bias.requires_grad_(True)  # PEFT's bias="all" trains the base layer's bias
    x = torch.randn(2, 3, 256)
    layer(x).pow(2).sum().backward()
    b = layer.bias.detach().clone().requires_grad_(True)
    nn.functional.linear(x, layer.dequantize(), b).pow(2).sum().backward()
    torch.testing.assert_close(layer.bias.grad, b.grad)


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


def test_merge_and_dequantize_also_merges_lora_over_bitsandbytes_exactly():
    import bitsandbytes as bnb

    from lora_lab import LoraConfig, inject_lora, merge_and_dequantize

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False))
    q4 = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    q4.weight = bnb.nn.Params4bit(model[0].weight.data.clone(), requires_grad=False, quant_type="nf4")
    model[0] = q4.to("cpu")
    model = inject_lora(model, LoraConfig(r=4, lora_alpha=8, target_modules=["0"]))
    torch.nn.init.normal_(model[0].lora_B.weight, std=0.1)  # a trained-looking adapter
    x = torch.randn(3, 64)
    with torch.no_grad():
        want = model(x)
        merged = merge_and_dequantize(model)
        assert type(merged[0]) is torch.nn.Linear
        assert torch.allclose(merged(x), want, atol=1e-5)
    with pytest.raises(ValueError, match="no LoRA layers"):
        merge_and_dequantize(torch.nn.Sequential(torch.nn.Linear(4, 4)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], "all-linear"], ids=["some-4bit-left", "all-merged"])
def test_merge_and_dequantize_to_a_dtype_gives_a_model_that_runs(dtype, targets):
    # before: dtype=float16 gave fp16 layers in an fp32 model, and the next forward failed (m1 and m2 dtypes)
    model = get_qlora_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    ids = torch.randint(0, 128, (2, 7), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(ids).logits
        merged = merge_and_dequantize(model, dtype=dtype)
        got = merged(ids).logits
    assert got.dtype == dtype and merged.model.embed_tokens.weight.dtype == dtype
    assert all(m.weight.dtype == dtype for m in merged.modules() if type(m) is nn.Linear)
    assert any(isinstance(m, NF4Linear) for m in merged.modules()) == (targets != "all-linear")  # left as they were
    tolerance = {torch.float32: 1e-4, torch.float16: 0.05, torch.bfloat16: 0.3}[dtype]  # the dtype's own rounding
    assert (got.float() - want).abs().max() < tolerance
