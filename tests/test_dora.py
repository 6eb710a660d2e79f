"""lora_lab.dora against PEFT 0.21's use_dora=True: outputs, gradients, AdamW steps, merge/unmerge, adapters both ways."""

import copy
import json

import peft
import pytest
import torch
from torch import nn

import lora_lab
from lora_lab import LoraConfig, merge_lora, unmerge_lora
from lora_lab.dora import DoRALinear, get_dora_model, load_dora_adapter, save_dora_adapter
from lora_lab.lora import lora_layers
from lora_lab.qlora import NF4Linear

TARGETS = ["q_proj", "v_proj", "down_proj"]
SETTINGS = dict(r=4, lora_alpha=8, target_modules=TARGETS)


def peft_name(name: str) -> str:
    for part in ("lora_A", "lora_B"):
        name = name.replace(f".{part}.weight", f".{part}.default.weight")
    return "base_model.model." + name.replace(".lora_magnitude_vector", ".lora_magnitude_vector.default.weight")


@pytest.fixture(scope="module")
def base():
    return lora_lab.load_base_model()


@pytest.fixture
def pair(base):
    """Our DoRA model and PEFT's, holding the same A, B (B ≠ 0) and magnitudes."""
    torch.manual_seed(0)
    ours = get_dora_model(copy.deepcopy(base), LoraConfig(**SETTINGS, init_lora_weights=False))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**SETTINGS, use_dora=True, init_lora_weights=False))
    their_params = dict(theirs.named_parameters())
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if p.requires_grad:
                their_params[peft_name(n)].copy_(p)
    return ours, theirs


IDS = torch.randint(3, 1536, (2, 12), generator=torch.Generator().manual_seed(0))


def test_magnitude_starts_at_the_row_norms_and_the_model_at_the_base(base):
    layer = DoRALinear(copy.deepcopy(base.model.layers[0].self_attn.q_proj), r=4, lora_alpha=8)
    assert torch.allclose(layer.lora_magnitude_vector, layer.base_layer.weight.norm(dim=1))  # B = 0: ‖W0‖ per row
    model = get_dora_model(copy.deepcopy(base), LoraConfig(**SETTINGS))
    with torch.no_grad():
        assert torch.allclose(model(IDS).logits, base(IDS).logits, atol=1e-5)


def test_magnitudes_computed_independently_agree_with_peft(base):
    settings = dict(SETTINGS, init_lora_weights=False)  # nn.Linear's own init: B ≠ 0, so m ≠ ‖W0‖
    torch.manual_seed(1)
    ours = get_dora_model(copy.deepcopy(base), LoraConfig(**settings))
    torch.manual_seed(1)
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**settings, use_dora=True))
    their_params = dict(theirs.named_parameters())
    for n, p in ours.named_parameters():
        if p.requires_grad:  # the same seed drew the same A and B; each library computed m from them itself
            assert torch.allclose(p, their_params[peft_name(n)], rtol=1e-6, atol=1e-7), n


def test_same_outputs_and_gradients_as_peft(pair):
    ours, theirs = pair
    their_params = dict(theirs.named_parameters())
    ours.train(), theirs.train()
    loss_ours, loss_theirs = ours(IDS, labels=IDS).loss, theirs(IDS, labels=IDS).loss
    assert torch.allclose(loss_ours, loss_theirs, atol=1e-6)
    loss_ours.backward(), loss_theirs.backward()
    names = [n for n, p in ours.named_parameters() if p.requires_grad]
    assert sum("magnitude" in n for n in names) == 4 * len(TARGETS)  # m trains, next to A and B
    for n, p in ours.named_parameters():
        if p.requires_grad:
            assert torch.allclose(p.grad, their_params[peft_name(n)].grad, rtol=1e-4, atol=1e-7), n


def test_same_after_adamw_steps_and_through_merge_unmerge(pair):
    ours, theirs = pair
    their_params = dict(theirs.named_parameters())
    pairs = [(p, their_params[peft_name(n)]) for n, p in ours.named_parameters() if p.requires_grad]
    opts = [torch.optim.AdamW([p for p, _ in pairs], lr=1e-2), torch.optim.AdamW([q for _, q in pairs], lr=1e-2)]
    ours.train(), theirs.train()
    for _ in range(3):
        for model, opt in zip((ours, theirs), opts):
            opt.zero_grad()
            model(IDS, labels=IDS).loss.backward()
            opt.step()
    for p, q in pairs:
        assert torch.allclose(p, q, atol=1e-5)  # float reordering (B·A vs PEFT's B(A(I))) grows a little per step
    ours.eval(), theirs.eval()
    with torch.no_grad():
        before = ours(IDS).logits
        assert torch.allclose(before, theirs(IDS).logits, atol=1e-3)  # logits span about ±20
        merge_lora(ours), theirs.merge_adapter()
        assert all(layer.merged for _, layer in lora_layers(ours))
        assert torch.allclose(ours(IDS).logits, before, atol=1e-4)
        assert torch.allclose(ours(IDS).logits, theirs(IDS).logits, atol=1e-3)
        unmerge_lora(ours), theirs.unmerge_adapter()
        assert torch.allclose(ours(IDS).logits, before, atol=1e-4)


def test_saved_adapters_load_both_ways(pair, base, tmp_path):
    ours, theirs = pair
    with torch.no_grad():
        for _, layer in lora_layers(ours):  # a trained-looking magnitude, different from the row norms
            layer.lora_magnitude_vector.mul_(1.1)
        for n, p in theirs.named_parameters():
            if "magnitude" in n:
                p.mul_(1.1)
    save_dora_adapter(ours, tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    config = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert config["use_dora"] is True and config["r"] == 4
    with torch.no_grad():
        want = ours(IDS).logits
        peft_loads = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "ours")
        assert torch.allclose(peft_loads(IDS).logits, want, atol=1e-4)
        ours_loads = load_dora_adapter(copy.deepcopy(base), tmp_path / "theirs")
        assert torch.allclose(ours_loads(IDS).logits, theirs(IDS).logits, atol=1e-4)
    assert not any(p.requires_grad for p in ours_loads.parameters())  # PEFT's default: loaded for inference
    with torch.no_grad():  # the one front door: save_adapter / load_adapter read use_dora from the config
        lora_lab.save_adapter(ours, tmp_path / "front")
        assert json.loads((tmp_path / "front" / "adapter_config.json").read_text())["use_dora"] is True
        again = lora_lab.load_adapter(copy.deepcopy(base), tmp_path / "theirs")
        assert isinstance(lora_layers(again)[0][1], DoRALinear)
        assert torch.allclose(again(IDS).logits, theirs(IDS).logits, atol=1e-4)
        front = peft.PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "front")
        assert torch.allclose(front(IDS).logits, want, atol=1e-4)


def test_bad_inputs(base, tmp_path):
    q_proj = base.model.layers[0].self_attn.q_proj
    with pytest.raises(TypeError, match="base_layer=NF4Linear is not accepted.*nn.Linear with float32"):
        DoRALinear(NF4Linear.from_linear(q_proj), r=4, lora_alpha=8)
    with pytest.raises(ValueError, match=r"r=200 is not accepted .* at most .* = 192"):
        DoRALinear(copy.deepcopy(q_proj), r=200, lora_alpha=8)
    lora_lab.save_adapter(lora_lab.inject_lora(copy.deepcopy(base), LoraConfig(**SETTINGS)), tmp_path / "plain")
    with pytest.raises(ValueError, match="does not set use_dora: true"):
        load_dora_adapter(copy.deepcopy(base), tmp_path / "plain")
    with pytest.raises(ValueError, match="has no DoRA layers"):
        save_dora_adapter(lora_lab.inject_lora(copy.deepcopy(base), LoraConfig(**SETTINGS)), tmp_path / "x")


def test_dropout_path_matches_peft(base):
    torch.manual_seed(0)
    settings = dict(SETTINGS, lora_dropout=0.2)
    ours = get_dora_model(copy.deepcopy(base), LoraConfig(**settings, init_lora_weights=False))
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.LoraConfig(**settings, use_dora=True, init_lora_weights=False))
    their_params = dict(theirs.named_parameters())
    with torch.no_grad():
        for n, p in ours.named_parameters():
            if p.requires_grad:
                their_params[peft_name(n)].copy_(p)
    ours.train(), theirs.train()
    torch.manual_seed(5)
    a = ours(IDS).logits
    torch.manual_seed(5)  # the same dropout masks, drawn in the same order
    b = theirs(IDS).logits
    assert torch.allclose(a, b, atol=1e-4)
    assert isinstance(lora_layers(ours)[0][1].lora_dropout, nn.Dropout)
