"""lora_lab.loftq: the alternating NF4 / SVD init on real weights, and PEFT 0.21's own loftq_init."""

import copy

import pytest
import torch

import lora_lab
from lora_lab import LoraConfig
from lora_lab.loftq import get_loftq_model, loftq_init, low_rank_decomposition, peft_loftq_init
from lora_lab.lora import lora_layers
from lora_lab.nf4 import dequantize_nf4, quantize_nf4
from lora_lab.qlora import QLoRALinear


@pytest.fixture(scope="module")
def base():
    return lora_lab.load_base_model()


@pytest.fixture(scope="module")
def weights(base):
    names = ["model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "model.layers.3.mlp.up_proj"]
    return [base.get_submodule(n).weight.detach() for n in names]


def test_each_iteration_starts_closer_to_w0_than_qlora(weights):
    for w in weights:
        result = loftq_init(w, 8, num_iter=3, scaling=2.0)
        start = float((w - dequantize_nf4(quantize_nf4(w, double_quant=False), torch.float32)).norm())
        assert result.errors[0] == pytest.approx(start, rel=1e-6)  # iteration 0: QLoRA's Q = NF4(W0), B = 0
        assert all(b < a for a, b in zip(result.errors, result.errors[1:]))  # every iteration helps (on these weights)
        assert result.errors[1] < 0.95 * result.errors[0]
        q = result.quantized.dequantize(torch.float32)
        lowrank = 2.0 * result.lora_B @ result.lora_A  # what the forward adds: scaling · B · A
        assert float((w - q - lowrank).norm()) == pytest.approx(result.errors[-1], rel=1e-5)
        assert result.lora_A.shape == (8, w.shape[1]) and result.lora_B.shape == (w.shape[0], 8)


def test_same_bits_as_peft_loftq_init_at_scaling_one(weights):
    for w in weights[:2]:
        for num_iter in (1, 2):
            q, a, b = peft_loftq_init(w, 4, num_iter)
            ours = loftq_init(w, 4, num_iter)
            assert torch.equal(q, ours.quantized.dequantize(torch.float32))
            assert torch.equal(a, ours.lora_A) and torch.equal(b, ours.lora_B)
    assert torch.Tensor.to is torch._C.TensorBase.to  # the CPU redirect for PEFT's "cuda" is undone


def test_peft_loftq_ignores_the_scaling(weights):
    w = weights[0]
    q, a, b = peft_loftq_init(w, 8, 1)
    ours = loftq_init(w, 8, 1, scaling=2.0)
    # with lora_alpha = 2r the forward doubles PEFT's B·A: W0 − Q − 2·L·R = (W0 − Q − L·R) − L·R, and the two
    # parts are orthogonal (SVD), so the start is exactly as far from W0 as plain QLoRA's
    peft_error = float((w - q - 2.0 * b @ a).norm())
    assert peft_error == pytest.approx(ours.errors[0], rel=1e-4)
    assert ours.errors[1] < 0.95 * peft_error
    L, R = low_rank_decomposition(w - q, 8)
    assert torch.allclose(2.0 * ours.lora_B @ ours.lora_A, L @ R, atol=1e-6)  # ours: scaling · B · A = L · R


def test_loftq_model_is_qlora_over_the_loftq_weight(base):
    model = get_loftq_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "down_proj"]),
                            num_iter=2)
    layers = lora_layers(model)
    assert len(layers) == 8 and all(isinstance(layer, QLoRALinear) for _, layer in layers)
    for name, layer in layers:
        w0 = base.get_submodule(name).weight
        effective = layer.base_layer.dequantize() + layer.get_delta_weight()
        assert (w0 - effective).norm() < layer.loftq_errors[0]  # closer to W0 than NF4(W0) alone
        assert float((w0 - effective).norm()) == pytest.approx(layer.loftq_errors[-1], rel=1e-5)
    ids = torch.randint(3, 1536, (2, 10), generator=torch.Generator().manual_seed(0))
    qlora = lora_lab.get_qlora_model(copy.deepcopy(base), LoraConfig(r=8, lora_alpha=16,
                                                                      target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        want = base(ids).logits
        assert (model(ids).logits - want).abs().mean() < (qlora(ids).logits - want).abs().mean()


def test_bad_inputs(base, weights):
    with pytest.raises(ValueError, match=r"r=600 is not accepted for a 192→192 weight; r must be an int in 1\.\.192"):
        loftq_init(weights[0], 600)
    with pytest.raises(ValueError, match="num_iter=0 is not accepted"):
        loftq_init(weights[0], 4, num_iter=0)
    quantized = lora_lab.quantize_model(copy.deepcopy(base))
    with pytest.raises(TypeError, match="target 'model.layers.0.self_attn.q_proj'=NF4Linear is not accepted; LoftQ quantizes the full-precision"):
        get_loftq_model(quantized, LoraConfig(r=4, lora_alpha=8))
    with pytest.raises(ValueError, match=r"r=200 is not accepted"):
        get_loftq_model(copy.deepcopy(base), LoraConfig(r=200, lora_alpha=8))
