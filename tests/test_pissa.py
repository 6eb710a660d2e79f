"""lora_lab.pissa against PEFT 0.21's init_lora_weights="pissa": init, training steps, and the conversion to a plain LoRA on save."""

import copy
import json

import peft
import pytest
import torch

import lora_lab
from lora_lab import LoraConfig
from lora_lab.adapters import read_adapter_weights
from lora_lab.lora import LoRALinear, lora_layers
from lora_lab.pissa import (
    adapter_tensors,
    get_pissa_model,
    pissa_init_,
    pissa_to_lora,
    save_pissa_as_lora,
)
from lora_lab.qlora import get_qlora_model

TARGETS = ["q_proj", "v_proj", "down_proj"]
SETTINGS = dict(r=4, lora_alpha=8, target_modules=TARGETS)
IDS = torch.randint(3, 1536, (2, 12), generator=torch.Generator().manual_seed(0))


def peft_name(name: str) -> str:
    for part in ("lora_A", "lora_B"):
        name = name.replace(f".{part}.weight", f".{part}.default.weight")
    return "base_model.model." + name


@pytest.fixture(scope="module")
def base():
    return lora_lab.load_base_model()


@pytest.fixture
def pair(base):
    ours = get_pissa_model(copy.deepcopy(base), LoraConfig(**SETTINGS))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**SETTINGS, init_lora_weights="pissa"))
    return ours, theirs


def test_init_equals_peft_and_keeps_the_model(pair, base):
    ours, theirs = pair
    their_params = dict(theirs.named_parameters())
    for n, p in ours.named_parameters():
        if p.requires_grad:
            assert torch.equal(p, their_params[peft_name(n)]), n  # the same operations give the same bits
    for name, layer in lora_layers(ours):
        their_base = theirs.base_model.model.get_submodule(name).base_layer.weight
        assert torch.equal(layer.base_layer.weight, their_base), name
        w0 = base.get_submodule(name).weight
        assert torch.allclose(layer.base_layer.weight + layer.get_delta_weight(), w0, atol=1e-5)  # W_res + s·B·A = W0
        s = torch.linalg.svdvals(w0)
        assert torch.allclose(torch.linalg.svdvals(layer.get_delta_weight())[:4], s[:4], rtol=1e-4)  # the top-r part
    with torch.no_grad():
        assert torch.allclose(ours(IDS).logits, base(IDS).logits, atol=1e-4)


def test_same_after_training_steps(pair):
    ours, theirs = pair
    their_params = dict(theirs.named_parameters())
    pairs = [(p, their_params[peft_name(n)]) for n, p in ours.named_parameters() if p.requires_grad]
    opts = [torch.optim.AdamW([p for p, _ in pairs], lr=1e-2), torch.optim.AdamW([q for _, q in pairs], lr=1e-2)]
    for _ in range(3):
        for model, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            model(IDS, labels=IDS).loss.backward()
            opt.step()
    for p, q in pairs:
        assert torch.allclose(p, q, atol=1e-6)
    with torch.no_grad():
        assert torch.allclose(ours(IDS).logits, theirs(IDS).logits, atol=1e-5)


def test_conversion_to_plain_lora_matches_peft_and_loads_on_the_original_base(pair, base, tmp_path):
    ours, theirs = pair
    initial = adapter_tensors(ours)
    theirs.peft_config["default"].init_lora_weights = True  # PEFT's recipe: save the initial adapter as plain LoRA
    theirs.save_pretrained(tmp_path / "init")
    theirs.peft_config["default"].init_lora_weights = "pissa"
    their_params = dict(theirs.named_parameters())
    with torch.no_grad():  # "training": the same change to both
        g = torch.Generator().manual_seed(3)
        for n, p in ours.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
                their_params[peft_name(n)].copy_(p)
        trained = ours(IDS).logits
    theirs.save_pretrained(tmp_path / "theirs", path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    save_pissa_as_lora(ours, initial, tmp_path / "ours")

    for folder in ("ours", "theirs"):
        config = json.loads((tmp_path / folder / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (8, 16, True), folder
    mine, peft_tensors = read_adapter_weights(tmp_path / "ours"), read_adapter_weights(tmp_path / "theirs")
    assert mine.keys() == peft_tensors.keys() and all(torch.equal(mine[k], peft_tensors[k]) for k in mine)
    assert mine.keys() == pissa_to_lora(ours, initial).keys()

    with torch.no_grad():  # both converted adapters belong on W0, the ORIGINAL base
        peft_loads = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
        assert torch.allclose(peft_loads(IDS).logits, trained, atol=1e-4)
        ours_loads = lora_lab.load_adapter(copy.deepcopy(base), tmp_path / "theirs")
        assert torch.allclose(ours_loads(IDS).logits, trained, atol=1e-4)
        # the mistake the conversion prevents: the trained A and B put on W0 count W0's top part twice
        naive = lora_lab.inject_lora(copy.deepcopy(base), LoraConfig(**SETTINGS, init_lora_weights=False))
        for (_, layer), (_, trained_layer) in zip(lora_layers(naive), lora_layers(ours)):
            layer.lora_A.weight.copy_(trained_layer.lora_A.weight)
            layer.lora_B.weight.copy_(trained_layer.lora_B.weight)
        assert (naive(IDS).logits - trained).abs().max() > 1.0


def test_a_pissa_adapter_saved_as_peft_saves_it_means_the_same_on_the_original_base(pair, base, tmp_path):
    # PEFT's convention: init_lora_weights "pissa" in the file; the loader redoes W0's SVD, then loads A and B
    ours, theirs = pair
    their_params = dict(theirs.named_parameters())
    with torch.no_grad():
        g = torch.Generator().manual_seed(3)
        for n, p in ours.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
                their_params[peft_name(n)].copy_(p)
        trained = ours(IDS).logits
    lora_lab.save_adapter(ours, tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    assert json.loads((tmp_path / "ours" / "adapter_config.json").read_text())["init_lora_weights"] == "pissa"
    with torch.no_grad():
        for loaded in (lora_lab.load_adapter(copy.deepcopy(base), tmp_path / "ours"),
                       lora_lab.load_adapter(copy.deepcopy(base), tmp_path / "theirs"),
                       peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")):
            assert torch.allclose(loaded(IDS).logits, trained, atol=1e-4)


def test_bad_inputs(base):
    model = get_qlora_model(copy.deepcopy(base), LoraConfig(**SETTINGS))
    with pytest.raises(TypeError, match="layer=QLoRALinear is not accepted"):
        pissa_init_(lora_layers(model)[0][1])
    quantized = lora_lab.quantize_model(copy.deepcopy(base))
    with pytest.raises(TypeError, match="target 'model.layers.0.self_attn.q_proj'=NF4Linear is not accepted.*float32"):
        get_pissa_model(quantized, LoraConfig(**SETTINGS))
    assert not lora_layers(quantized)  # checked before anything changed
    with pytest.raises(ValueError, match=r"r=193 is not accepted .* at most .* = 192"):
        get_pissa_model(copy.deepcopy(base), LoraConfig(r=193, lora_alpha=8, target_modules=TARGETS))
    ours = get_pissa_model(copy.deepcopy(base), LoraConfig(**SETTINGS))
    with pytest.raises(ValueError, match="initial has 2 tensors"):
        pissa_to_lora(ours, dict(list(adapter_tensors(ours).items())[:2]))
    assert isinstance(lora_layers(ours)[0][1], LoRALinear)
