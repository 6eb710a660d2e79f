"""One front door for every adapter kind: LoraConfig names it, inject_lora builds it, save_adapter / load_adapter
keep its meaning, both ways with PEFT 0.21 where PEFT has the same kind."""

import copy
import json
import re

import peft
import pytest
import torch
from tiny_llama import logits, tiny, train_a_little
from transformers import AutoModelForCausalLM

from lora_lab import LoraConfig, inject_lora, load_adapter, load_base_model, save_adapter
from lora_lab.adapters import read_adapter_weights
from lora_lab.dora import DoRALinear
from lora_lab.loftq import _cuda_as_cpu
from lora_lab.lora import LoRALinear, lora_layers
from lora_lab.models import bnb_4bit_config
from lora_lab.pissa import adapter_tensors, save_pissa_as_lora
from lora_lab.qalora import QALoRALinear
from lora_lab.qlora import NF4Linear, QLoRALinear, quantize_model

TARGETS = ["down_proj", "q_proj", "v_proj"]  # sorted, as adapter_config.json stores them
KINDS = {
    "lora": {},
    "rslora": dict(use_rslora=True),
    "dora": dict(use_dora=True),
    "pissa": dict(init_lora_weights="pissa"),
    "loftq": dict(init_lora_weights="loftq", loftq_config={"loftq_bits": 4, "loftq_iter": 2}),
    "qalora": dict(use_qalora=True, qalora_group_size=16),
}
LAYERS = {"lora": LoRALinear, "rslora": LoRALinear, "dora": DoRALinear, "pissa": LoRALinear, "loftq": QLoRALinear,
          "qalora": QALoRALinear}


def config(kind: str, **kw) -> LoraConfig:
    return LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, **KINDS[kind], **kw)


@pytest.mark.parametrize("kind", KINDS)
def test_the_config_chooses_the_layer_and_the_round_trip_keeps_the_meaning(kind, tmp_path):
    ours = train_a_little(inject_lora(tiny(), config(kind)))
    assert {type(layer) for _, layer in lora_layers(ours)} == {LAYERS[kind]}
    assert ours.lora_config.variant == ("lora" if kind == "rslora" else kind)
    save_adapter(ours, tmp_path)
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert {k: saved[k] for k in KINDS[kind]} == KINDS[kind]  # PEFT's keys, PEFT's values
    loaded = load_adapter(tiny(), tmp_path)  # the original full-precision base
    assert {type(layer) for _, layer in lora_layers(loaded)} == {LAYERS[kind]}
    assert loaded.lora_config == ours.lora_config
    torch.testing.assert_close(logits(loaded), logits(ours), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["lora", "rslora", "dora", "pissa"])
def test_peft_loads_the_kits_files_and_the_kit_loads_pefts(kind, tmp_path):
    ours = train_a_little(inject_lora(tiny(), config(kind)))
    save_adapter(ours, tmp_path / "ours")
    theirs = peft.PeftModel.from_pretrained(tiny(), tmp_path / "ours")
    torch.testing.assert_close(logits(theirs), logits(ours), atol=1e-5, rtol=0)

    peft_model = train_a_little(peft.get_peft_model(tiny(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                                            **KINDS[kind])))
    peft_model.save_pretrained(tmp_path / "peft")
    loaded = load_adapter(tiny(), tmp_path / "peft")
    assert {type(layer) for _, layer in lora_layers(loaded)} == {LAYERS[kind]}
    torch.testing.assert_close(logits(loaded), logits(peft_model.eval()), atol=1e-5, rtol=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a CPU-only machine PEFT's LoftQ needs its device mapped")
def test_loftq_files_go_both_ways_with_pefts_own_loftq(tmp_path, monkeypatch):
    # PEFT's loftq_init hard-codes "cuda"; lora_lab.loftq._cuda_as_cpu maps it to the CPU while PEFT runs. PEFT's
    # LoraConfig also refuses init_lora_weights="loftq" unless scipy is installed (a guard: LoftQ does not use it)
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "scipy" else find_spec(name, *a))
    ours = train_a_little(inject_lora(tiny(), config("loftq")))
    save_adapter(ours, tmp_path / "ours")
    with _cuda_as_cpu():
        theirs = peft.PeftModel.from_pretrained(tiny(), tmp_path / "ours")  # PEFT redoes LoftQ on W0
        peft_model = peft.get_peft_model(tiny(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                                 **KINDS["loftq"]))
    torch.testing.assert_close(logits(theirs), logits(ours), atol=1e-4, rtol=0)
    train_a_little(peft_model).save_pretrained(tmp_path / "peft")
    loaded = load_adapter(tiny(), tmp_path / "peft")  # lora_lab redoes LoftQ with its own NF4: the same Q
    torch.testing.assert_close(logits(loaded), logits(peft_model.eval()), atol=1e-4, rtol=0)


def test_qalora_files_are_pefts_format(tmp_path):
    # PEFT 0.21 runs QA-LoRA on GPTQ layers only, so it cannot load this onto a plain model; the config is its
    ours = train_a_little(inject_lora(tiny(), config("qalora")))
    save_adapter(ours, tmp_path)
    read = peft.PeftConfig.from_pretrained(tmp_path)
    assert (read.use_qalora, read.qalora_group_size, read.r) == (True, 16, 4)
    assert read_adapter_weights(tmp_path)["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"].shape == (4, 4)


def test_pissa_converted_to_plain_lora_through_the_front_door(tmp_path):
    ours = inject_lora(tiny(), config("pissa"))
    initial = adapter_tensors(ours)
    train_a_little(ours)
    save_adapter(ours, tmp_path / "front", convert_to_lora=True)  # the initial A and B were kept by inject_lora
    save_pissa_as_lora(ours, initial, tmp_path / "teaching")
    front, teaching = read_adapter_weights(tmp_path / "front"), read_adapter_weights(tmp_path / "teaching")
    assert front.keys() == teaching.keys() and all(torch.equal(front[k], teaching[k]) for k in front)
    saved = json.loads((tmp_path / "front" / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"], saved["init_lora_weights"]) == (8, 16, True)
    for loaded in (load_adapter(tiny(), tmp_path / "front"), peft.PeftModel.from_pretrained(tiny(), tmp_path / "front")):
        torch.testing.assert_close(logits(loaded), logits(ours), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="convert_to_lora=True converts a PiSSA adapter"):
        save_adapter(inject_lora(tiny(), config("lora")), tmp_path / "x", convert_to_lora=True)


def test_pissa_on_its_saved_residual_is_recognised_where_peft_subtracts_the_svd_again(tmp_path):
    ours = train_a_little(inject_lora(tiny(), config("pissa")))
    save_adapter(ours, tmp_path, save_base=True)  # base_model/ holds W_res, what PEFT advises for quantized serving
    residual = AutoModelForCausalLM.from_pretrained(tmp_path / "base_model").eval()
    loaded = load_adapter(copy.deepcopy(residual), tmp_path)
    torch.testing.assert_close(logits(loaded), logits(ours), atol=1e-5, rtol=0)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(residual), tmp_path)  # PEFT: SVD of W_res, a second time
    assert (logits(theirs) - logits(ours)).abs().max() > 0.1


def test_loftq_needs_its_own_4bit_weights_and_finds_them(tmp_path):
    ours = train_a_little(inject_lora(tiny(), config("loftq")))
    want = logits(ours)
    save_adapter(ours, tmp_path, save_base=True)  # PEFT's LoftQ recipe: the quantized base saved beside it
    torch.testing.assert_close(logits(load_adapter(tiny(), tmp_path)), want, atol=1e-5, rtol=0)  # LoftQ redone on W0
    qlora_base = quantize_model(tiny(), double_quant=False)  # NF4(W0): not the weights LoftQ trained on
    with pytest.raises(ValueError, match="LoftQ's own 4-bit weights, and this base's 4-bit weights .* are not those"):
        load_adapter(qlora_base, tmp_path)
    assert not lora_layers(qlora_base) and isinstance(qlora_base.model.layers[0].self_attn.q_proj, NF4Linear)
    saved_base = AutoModelForCausalLM.from_pretrained(tmp_path / "base_model").eval()
    torch.testing.assert_close(logits(load_adapter(saved_base, tmp_path)), want, atol=1e-5, rtol=0)
    quantization = bnb_4bit_config(double_quant=False)  # PEFT's LoftQ: no double quantization
    quantization.llm_int8_skip_modules = ["lm_head", "k_proj", "o_proj", "gate_proj", "up_proj"]  # the targets only
    four_bit = load_base_model(tmp_path / "base_model", quantization=quantization)
    torch.testing.assert_close(logits(load_adapter(four_bit, tmp_path)), want, atol=1e-4, rtol=0)


def test_save_base_writes_plain_weights_and_refuses_a_second_time(tmp_path):
    ours = inject_lora(tiny(), config("lora"))
    save_adapter(ours, tmp_path, save_base=True)
    assert not hasattr(AutoModelForCausalLM.from_pretrained(tmp_path / "base_model").config, "quantization_config")
    with pytest.raises(FileExistsError, match="already holds an adapter"):
        save_adapter(ours, tmp_path, save_base=True)


def test_loftq_with_double_quantization_reloads_as_it_was_built(tmp_path):
    from lora_lab.loftq import get_loftq_model

    ours = train_a_little(get_loftq_model(tiny(), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS), num_iter=2,
                                          double_quant=True))
    save_adapter(ours, tmp_path)
    loaded = load_adapter(tiny(), tmp_path)
    assert lora_layers(loaded)[0][1].base_layer.absmax2 is not None  # 8-bit block scales again
    torch.testing.assert_close(logits(loaded), logits(ours), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind, base, error, words", [
    ("pissa", "nf4", TypeError, "target 'model.layers.0.self_attn.q_proj'=NF4Linear is not accepted; PiSSA needs the SVD"),
    ("dora", "nf4", TypeError, "target 'model.layers.0.self_attn.q_proj'=NF4Linear is not accepted; DoRA takes the norm"),
    ("qalora", "fp32", ValueError, "target 'model.layers.0.self_attn.q_proj': qalora_group_size=48 is not accepted for "
                                   "in_features=64: it must divide in_features; accepted: [1, 2, 4, 8, 16, 32, 64]"),
])
def test_a_variant_that_cannot_wrap_a_target_is_refused_before_anything_changes(kind, base, error, words):
    model = quantize_model(tiny()) if base == "nf4" else tiny()
    settings = dict(KINDS[kind], qalora_group_size=48) if kind == "qalora" else KINDS[kind]
    before = logits(model)
    with pytest.raises(error, match=re.escape(words)):
        inject_lora(model, LoraConfig(r=2, lora_alpha=4, target_modules=TARGETS, **settings))
    assert not lora_layers(model) and torch.equal(logits(model), before)
