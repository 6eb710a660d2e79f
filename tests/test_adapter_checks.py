"""Nothing silent around an adapter: a misspelt config key, a tied target, resized embeddings, dropout's mode, and the
base an adapter is loaded onto (the merged model, another model). Each beside what PEFT 0.21 does in the same case."""

import copy
import dataclasses
import json
import warnings

import peft
import pytest
import torch
from tiny_llama import logits, tiny, train_a_little
from transformers import (
    AutoModelForCausalLM,
)

from lora_lab import LoraConfig, inject_lora, load_adapter, merge_lora, save_adapter
from lora_lab.lora import lora_layers
from lora_lab.lora_config import PEFT_KEYS
from lora_lab.qlora import quantize_model


def trained(model, seed: int = 3, **kw):
    return train_a_little(inject_lora(model, LoraConfig(r=4, lora_alpha=8, init_lora_weights=False, **kw)), seed)


@pytest.fixture
def quiet():
    """Fail on any UserWarning (lora_lab's kind) inside the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        yield


# ---- 3 · a misspelt key in adapter_config.json ------------------------------------------------------------

def test_the_known_keys_are_peft_0_21s():
    assert sorted(PEFT_KEYS) == sorted(f.name for f in dataclasses.fields(peft.LoraConfig))


def test_a_misspelt_key_names_the_closest_one_where_peft_warns_and_uses_the_default(tmp_path):
    ours = trained(tiny())
    save_adapter(ours, tmp_path)
    file = tmp_path / "adapter_config.json"
    raw = json.loads(file.read_text())
    raw["lora_alpah"] = 32
    del raw["lora_alpha"]
    file.write_text(json.dumps(raw))
    model = tiny()
    with pytest.raises(ValueError, match="has the key 'lora_alpah', which no LoRA setting is called; did you mean "
                                         "'lora_alpha'\\? \\(as written, lora_alpha would be 8, its default\\)"):
        load_adapter(model, tmp_path)
    assert not lora_layers(model)
    with pytest.warns(UserWarning, match=r"Unexpected keyword arguments \['lora_alpah'\] for class LoraConfig, these "
                                         "are ignored"):
        theirs = peft.PeftModel.from_pretrained(tiny(), tmp_path)
    assert theirs.peft_config["default"].lora_alpha == 8  # PEFT's default, not the 32 the file meant


@pytest.mark.parametrize("key", ["LoRA_alpha", "alpha", "Lora-Alpha"])
def test_a_key_written_in_another_case_or_short_is_refused_too(tmp_path, key):
    save_adapter(trained(tiny()), tmp_path)
    file = tmp_path / "adapter_config.json"
    raw = json.loads(file.read_text())
    raw[key] = raw.pop("lora_alpha") * 4
    file.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=f"has the key '{key}', which no LoRA setting is called; did you mean "
                                         "'lora_alpha'"):
        load_adapter(tiny(), tmp_path)


def test_an_unknown_key_that_is_no_typo_warns_and_loads(tmp_path):
    save_adapter(trained(tiny()), tmp_path)
    file = tmp_path / "adapter_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text()), "shiny_new_option": None}))
    with pytest.warns(UserWarning, match=r"ignoring \['shiny_new_option'\], keys PEFT 0.21 does not know"):
        load_adapter(tiny(), tmp_path)


# ---- 4 · LoRA on a tied lm_head ---------------------------------------------------------------------------

def test_a_tied_target_is_warned_about_and_the_merge_leaves_the_embeddings_alone(tmp_path):
    base = tiny(tie=True)
    assert base.lm_head.weight is base.model.embed_tokens.weight
    embeddings = base.model.embed_tokens.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"\['lm_head'\] share their weight with \['model.embed_tokens.weight'\]"):
        ours = trained(base, target_modules=["q_proj", "lm_head"])
    want = logits(ours)
    with pytest.warns(UserWarning, match=r"each got its own copy before the merge, so the embeddings stay"):
        merged = merge_lora(ours, unload=True)
    assert torch.equal(merged.model.embed_tokens.weight, embeddings)
    assert merged.config.tie_word_embeddings is False
    torch.testing.assert_close(logits(merged), want, atol=1e-5, rtol=0)
    merged.save_pretrained(tmp_path)
    torch.testing.assert_close(logits(AutoModelForCausalLM.from_pretrained(tmp_path)), want, atol=1e-5, rtol=0)


def test_peft_warns_about_a_tied_target_then_merges_into_the_embeddings():
    base = tiny(tie=True)
    embeddings = base.model.embed_tokens.weight.detach().clone()
    with pytest.warns(UserWarning, match="tie_word_embeddings=True"):
        theirs = peft.get_peft_model(base, peft.LoraConfig(target_modules=["q_proj", "lm_head"], init_lora_weights=False))
    want = logits(theirs)
    merged = theirs.merge_and_unload()
    assert (merged.model.embed_tokens.weight - embeddings).abs().max() > 0.01  # the input embeddings moved too
    assert (logits(merged) - want).abs().max() > 0.1


# ---- 5 · token embeddings resized since the base was saved ------------------------------------------------

@pytest.fixture
def resized(tmp_path):
    """A base saved to disk, loaded, given one more token (row 128), with LoRA on it."""
    tiny().save_pretrained(tmp_path / "base")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "base").eval()
    model.resize_token_embeddings(129, mean_resizing=False)
    with torch.no_grad():
        model.model.embed_tokens.weight[128] = 0.5
        model.lm_head.weight[128] = -0.5
    return trained(model), tmp_path


def test_resized_embeddings_are_saved_and_the_loader_resizes_the_base(resized):
    ours, tmp_path = resized
    new_token = torch.tensor([[5, 128, 7]])
    with torch.no_grad():
        want = ours(new_token).logits
    with pytest.warns(UserWarning, match=r"resized since the base was saved \(128 → 129 rows\): saving them"):
        save_adapter(ours, tmp_path / "adapter")
    fresh = AutoModelForCausalLM.from_pretrained(tmp_path / "base")
    with pytest.warns(UserWarning, match="resizing the model's token embeddings from 128 to 129 rows"):
        loaded = load_adapter(fresh, tmp_path / "adapter")
    with torch.no_grad():
        torch.testing.assert_close(loaded(new_token).logits, want, atol=1e-5, rtol=0)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_peft_saves_resized_embeddings_but_cannot_load_them_onto_the_base(resized):
    ours, tmp_path = resized
    theirs = peft.get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), peft.LoraConfig())
    theirs.base_model.model.resize_token_embeddings(129)
    with pytest.warns(UserWarning, match="embedding layer has been resized"):
        theirs.save_pretrained(tmp_path / "peft")
    with pytest.raises(RuntimeError, match="size mismatch for base_model.model.model.embed_tokens.weight"):
        peft.PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "peft")
    loaded = load_adapter(AutoModelForCausalLM.from_pretrained(tmp_path / "base"), tmp_path / "peft")  # the kit can
    assert loaded.model.embed_tokens.weight.shape[0] == 129


# ---- 6 · dropout follows the model's mode -----------------------------------------------------------------

def test_dropout_follows_the_mode_of_the_model_it_joins(tmp_path, quiet):
    ours = trained(tiny(), lora_dropout=0.5)  # tiny() is in eval mode
    assert not any(m.training for m in ours.modules())
    torch.testing.assert_close(logits(ours), logits(ours), atol=0, rtol=0)  # no dropout in eval mode
    ours.train()
    assert (logits(ours) - logits(ours)).abs().max() > 0  # and dropout once training
    save_adapter(ours, tmp_path)
    live = load_adapter(tiny(), tmp_path, is_trainable=True)  # an eval-mode base stays in eval mode
    assert not any(m.training for m in live.modules()) and any(p.requires_grad for p in live.parameters())


def test_peft_switches_dropout_on_for_a_model_in_eval_mode():
    theirs = peft.get_peft_model(tiny(), peft.LoraConfig(lora_dropout=0.5, init_lora_weights=False))
    assert theirs.training  # the wrapper starts in train mode: two forwards differ
    assert (logits(theirs) - logits(theirs)).abs().max() > 0


# ---- 7 · the base an adapter is loaded onto ---------------------------------------------------------------

@pytest.fixture
def saved(tmp_path):
    ours = trained(tiny())
    save_adapter(ours, tmp_path)
    return ours, tmp_path


def test_the_same_base_in_another_float_dtype_loads_without_a_word(saved, quiet):
    ours, tmp_path = saved
    load_adapter(tiny(), tmp_path)
    load_adapter(tiny().to(torch.bfloat16), tmp_path)


@pytest.mark.parametrize("kw", [{}, dict(use_dora=True)], ids=["lora", "dora"])
def test_loading_onto_the_model_it_was_merged_into_is_refused(kw, tmp_path):
    ours = trained(tiny(), **kw)
    save_adapter(ours, tmp_path)
    merged = merge_lora(copy.deepcopy(ours), unload=True)
    expected = logits(merged)
    with pytest.raises(ValueError, match="is already merged into this model: .* would add ΔW a second time"):
        load_adapter(merged, tmp_path)
    assert not lora_layers(merged) and torch.equal(logits(merged), expected)


def test_peft_loads_onto_the_merged_model_in_silence(saved):
    ours, tmp_path = saved
    merged = merge_lora(copy.deepcopy(ours), unload=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # not a word
        twice = peft.PeftModel.from_pretrained(merged, tmp_path)
    assert (logits(twice) - logits(ours)).abs().max() > 0.1  # ΔW counted twice


def test_another_base_of_the_same_shape_warns_with_the_distance(saved):
    ours, tmp_path = saved
    with pytest.warns(UserWarning, match=r"was saved with another base: the targeted weights differ from the saved ones "
                                         r"by \d+\.\d% \(relative\), another model of the same shape\?"):
        load_adapter(tiny(seed=1), tmp_path)
    with pytest.warns(UserWarning, match=r"by \d\.\d% \(relative\), close to it: the same model at another precision"):
        load_adapter(quantize_model(tiny(), skip=("lm_head", "k_proj", "o_proj", "gate_proj", "up_proj")), tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        peft.PeftModel.from_pretrained(tiny(seed=1), tmp_path)  # PEFT: base_model_name_or_path is saved, never checked


def test_a_4bit_base_is_read_when_the_adapter_is_saved_not_when_lora_is_put_on(tmp_path, monkeypatch):
    # a dequantized copy at injection would add to every model's build (lora_lab.step_memory measures builds)
    from lora_lab.qlora import NF4Linear

    reads, dequantize = [], NF4Linear.dequantize
    monkeypatch.setattr(NF4Linear, "dequantize", lambda self, *a, **k: reads.append(1) or dequantize(self, *a, **k))
    ours = trained(quantize_model(tiny()))
    assert not reads
    save_adapter(ours, tmp_path)
    assert reads
    with pytest.warns(UserWarning, match="rounded away"):
        merged = merge_lora(copy.deepcopy(ours), unload=True)  # into the 4-bit weights: requantized
    with pytest.raises(ValueError, match="is already merged into this model"):
        load_adapter(merged, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        load_adapter(quantize_model(tiny()), tmp_path)  # the same 4-bit base: not a word
