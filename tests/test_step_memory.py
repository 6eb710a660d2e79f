"""lora_lab.step_memory: the random 4-bit weights, the models it measures, and its errors (the measuring
itself, one fresh process per configuration, runs in notebook 05)."""

import pytest
import torch

from lora_lab.lora import LoRALinear
from lora_lab.nf4 import dequantize_nf4
from lora_lab.qlora import NF4Linear, QLoRALinear
from lora_lab.step_memory import (
    FloatCopyNF4Linear,
    StepConfig,
    build_model,
    main,
    measure,
    random_nf4,
    start,
)

SMALL = StepConfig(hidden_size=128, intermediate_size=256, num_attention_heads=4, num_hidden_layers=1, vocab_size=64)


def test_random_nf4_is_a_double_quantized_weight_that_bitsandbytes_reads():
    q = random_nf4(256, 128, torch.Generator().manual_seed(0))
    assert q.packed.shape == (256 * 128 // 2,) and q.absmax.dtype == torch.uint8 and q.double_quant
    w = dequantize_nf4(q)  # (256, 128)
    assert w.shape == (256, 128) and 0.02 < w.abs().max() <= 0.061  # absmax is 2 to 3 std of 0.02
    bnb = pytest.importorskip("bitsandbytes")
    assert torch.equal(bnb.functional.dequantize_4bit(*q.to_bitsandbytes()), w)
    with pytest.raises(ValueError, match="whole blocks of 64"):
        random_nf4(3, 5, torch.Generator())


@pytest.mark.parametrize("method, base", [("lora", torch.nn.Linear), ("qlora", NF4Linear),
                                          ("qlora-float-copy", FloatCopyNF4Linear)])
def test_build_model_holds_the_base_as_asked(method, base):
    model = build_model(method, SMALL)
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(layers) == 7 and all(type(m.base_layer) is base for m in layers)
    assert all(isinstance(m, QLoRALinear) for m in layers) == (method != "lora")
    assert not any(p.is_meta for p in model.parameters())
    assert {n.split(".")[-2] for n, p in model.named_parameters() if p.requires_grad} == {"lora_A", "lora_B"}
    ids = torch.randint(0, 64, (1, 8))
    model(input_ids=ids, labels=ids).loss.backward()  # a training step runs


def test_bad_arguments():
    with pytest.raises(ValueError, match="method='qlora4'"):
        measure(("qlora4",), SMALL)
    with pytest.raises(ValueError, match="parallel=0"):
        start(("qlora",), SMALL, parallel=0)
    with pytest.raises(SystemExit):
        main(["qlora", "--config", '{"layers": 2}'])  # StepConfig calls it num_hidden_layers


def test_dequantize_workspace_is_the_largest_4bit_weight():
    from lora_lab.memory import LLAMA2_7B, dequantize_workspace

    assert dequantize_workspace(LLAMA2_7B, "float16") == 11008 * 4096 * 2  # an MLP weight, 86 MiB on a T4
    assert dequantize_workspace(LLAMA2_7B, "float32") == 11008 * 4096 * 4
    with pytest.raises(ValueError, match="compute_dtype='int8'"):
        dequantize_workspace(LLAMA2_7B, "int8")
