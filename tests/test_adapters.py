"""lora_lab.adapters: PEFT's adapter format, cross-loaded both ways, and clear errors for files that do not fit."""

import json

import peft
import pytest
import torch
from safetensors import safe_open
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)

from lora_lab import LoraConfig, LoRALinear, inject_lora, load_adapter, save_adapter

IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))  # (batch, seq)


def tiny(arch: str, hidden: int = 64) -> nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(hidden_size=hidden, intermediate_size=128, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=4, vocab_size=128))
    if arch == "mistral":
        return MistralForCausalLM(MistralConfig(hidden_size=hidden, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=2, vocab_size=128))
    return GPT2LMHeadModel(GPT2Config(n_embd=hidden, n_layer=2, n_head=4, vocab_size=128, n_positions=64,
                                      bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                      attn_pdrop=0.0))


CASES = [("llama", ["q_proj", "v_proj"]), ("mistral", "all-linear"), ("gpt2", ["c_attn"]), ("gpt2", "all-linear")]
IDS_ = [f"{a}-{t if isinstance(t, str) else '+'.join(t)}" for a, t in CASES]


def trained(arch, targets, **kw):
    """Our LoRA on a tiny model with random non-zero A, B (and biases, if they train)."""
    model = inject_lora(tiny(arch), LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                               init_lora_weights=False, **kw))
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.mark.parametrize("arch, targets", CASES, ids=IDS_)
def test_ours_to_peft(arch, targets, tmp_path):
    ours = trained(arch, targets)
    save_adapter(ours, tmp_path)
    theirs = peft.PeftModel.from_pretrained(tiny(arch), tmp_path)
    torch.testing.assert_close(theirs(IDS).logits, ours(IDS).logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch, targets", CASES, ids=IDS_)
def test_peft_to_ours(arch, targets, tmp_path):
    theirs = peft.get_peft_model(tiny(arch), peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                             init_lora_weights=False))  # B ≠ 0
    theirs.save_pretrained(tmp_path)
    ours = load_adapter(tiny(arch), tmp_path)
    torch.testing.assert_close(ours(IDS).logits, theirs(IDS).logits, atol=1e-6, rtol=0)
    assert ours.lora_config.r == 4 and ours.lora_config.lora_alpha == 8


def test_file_layout_and_keys_are_pefts(tmp_path):
    ours = trained("llama", ["q_proj", "v_proj"])
    save_adapter(ours, tmp_path / "ours")
    theirs = peft.get_peft_model(tiny("llama"), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    theirs.save_pretrained(tmp_path / "peft")
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (tmp_path / "ours").iterdir()}
    keys = []
    for folder in ("ours", "peft"):
        with safe_open(tmp_path / folder / "adapter_model.safetensors", "pt") as f:
            keys.append(sorted(f.keys()))
    assert keys[0] == keys[1]
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys[0]
    config = peft.PeftConfig.from_pretrained(tmp_path / "ours")
    assert (config.peft_type, config.r, config.lora_alpha, config.bias) == ("LORA", 4, 8, "none")
    assert sorted(config.target_modules) == ["q_proj", "v_proj"]


@pytest.mark.parametrize("bias", ["all", "lora_only"])
def test_trained_biases_travel_both_ways(bias, tmp_path):
    ours = trained("gpt2", ["c_attn"], bias=bias)
    save_adapter(ours, tmp_path / "ours")
    theirs = peft.PeftModel.from_pretrained(tiny("gpt2"), tmp_path / "ours")
    torch.testing.assert_close(theirs(IDS).logits, ours(IDS).logits, atol=1e-6, rtol=0)
    theirs.save_pretrained(tmp_path / "peft")
    again = load_adapter(tiny("gpt2"), tmp_path / "peft")
    torch.testing.assert_close(again(IDS).logits, ours(IDS).logits, atol=1e-6, rtol=0)


def test_round_trip_keeps_config_and_trainability(tmp_path):
    ours = trained("mistral", ["q_proj", "v_proj"], use_rslora=True, lora_dropout=0.1)
    save_adapter(ours, tmp_path)
    frozen = load_adapter(tiny("mistral"), tmp_path)
    assert frozen.lora_config == ours.lora_config
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())  # PEFT's default
    live = load_adapter(tiny("mistral"), tmp_path, is_trainable=True)
    assert {n for n, p in live.named_parameters() if p.requires_grad} == {
        n for n, p in ours.named_parameters() if p.requires_grad}
    torch.testing.assert_close(frozen(IDS).logits, ours.eval()(IDS).logits, atol=1e-6, rtol=0)


# ---- files that do not fit ------------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    save_adapter(trained("llama", ["q_proj", "v_proj"]), tmp_path)
    return tmp_path


def edit_config(path, **changes):
    file = path / "adapter_config.json"
    config = json.loads(file.read_text())
    config.update(changes)
    file.write_text(json.dumps(config))


def test_missing_files(saved, tmp_path):
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        load_adapter(tiny("llama"), tmp_path / "nowhere")
    (saved / "adapter_model.safetensors").rename(saved / "adapter_model.bin")
    with pytest.raises(ValueError, match=r"has no adapter_model.safetensors \(found adapter_model.bin, a pickle"):
        load_adapter(tiny("llama"), saved)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_corrupt_weights_file_names_the_path(saved, damage):
    file = saved / "adapter_model.safetensors"
    data = file.read_bytes()
    file.write_bytes({"garbage": b"\x00not a safetensors file" * 10, "truncated": data[: len(data) // 2],
                      "empty": b""}[damage])
    model = tiny("llama")
    with pytest.raises(ValueError, match="adapter_model.safetensors' is not a readable safetensors file"):
        load_adapter(model, saved)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())


def test_corrupt_config(saved):
    (saved / "adapter_config.json").write_text("{r: 4,")
    with pytest.raises(ValueError, match="adapter_config.json' is not valid JSON"):
        load_adapter(tiny("llama"), saved)


@pytest.mark.parametrize("changes, words", [
    (dict(r=8), "has rank 4 but its config says r=8"),
    (dict(target_modules=["q_proj"]), "in the file with no such module"),
    (dict(target_modules=["q_proj", "k_proj", "v_proj"]), "LoRA weights missing from the file"),
    (dict(target_modules=["wq"]), r"target_modules=\['wq'\] matched no module .* q_proj"),
    (dict(use_dora=True), r"4 LoRA weights missing from the file \(e.g. \['model.layers.0.self_attn.q_proj.lora_mag"),
    (dict(peft_type="IA3"), "peft_type='IA3'"),
    (dict(init_lora_weights="olora"), "init_lora_weights='olora'; lora_lab loads True, False, 'gaussian', 'pissa'"),
    (dict(rank_pattern={"q_proj": 2}), r"sets rank_pattern=\{'q_proj': 2\}; lora_lab does not build that PEFT feature"),
    (dict(lora_alpah=16), "has the key 'lora_alpah', which no LoRA setting is called; did you mean 'lora_alpha'"),
    (dict(r=0), "r=0 is not accepted"),
])
def test_config_that_does_not_fit_the_file_or_model(saved, changes, words):
    edit_config(saved, **changes)
    model = tiny("llama")
    expected = model(IDS).logits
    with pytest.raises(ValueError, match=words):
        load_adapter(model, saved)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())  # left as it was
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(model(IDS).logits, expected)


def test_adapter_for_another_model_size(saved):
    with pytest.raises(ValueError, match=r"q_proj.lora_A.weight has shape \(4, 64\), the model needs \(4, 32\)"):
        load_adapter(tiny("llama", hidden=32), saved)


def test_an_adapter_is_never_overwritten_unless_asked(saved):
    files = {p.name: p.read_bytes() for p in saved.iterdir()}
    other = trained("llama", ["q_proj", "v_proj"], use_rslora=True)
    with pytest.raises(FileExistsError, match=f"path={str(saved)!r} already holds an adapter \\(adapter_config.json, "
                                              "adapter_model.safetensors\\); nothing was written. Choose another "
                                              "folder, or pass overwrite=True"):
        save_adapter(other, saved)
    assert {p.name: p.read_bytes() for p in saved.iterdir()} == files
    save_adapter(other, saved, overwrite=True)
    assert sorted(p.name for p in saved.iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert load_adapter(tiny("llama"), saved).lora_config.use_rslora


def test_a_crash_while_saving_leaves_no_adapter_that_loads(tmp_path, monkeypatch):
    import lora_lab.adapters as adapters

    def crash(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(adapters.os, "replace", crash)  # every file stays under its temporary name
    with pytest.raises(OSError):
        save_adapter(trained("llama", ["q_proj"]), tmp_path)
    with pytest.raises(ValueError, match="has no adapter_config.json"):
        load_adapter(tiny("llama"), tmp_path)


def test_save_needs_lora_layers(tmp_path):
    with pytest.raises(ValueError, match="has no LoRA layers"):
        save_adapter(tiny("llama"), tmp_path)
