"""The embedded tiny Llama and its tokenizer: real Llama classes, offline, 4-bit on CPU."""

import json
import time

import pytest
import torch

from lora_lab import load_base_model, load_instruction_dataset, load_tokenizer
from lora_lab.evaluate import evaluate
from lora_lab.hub import HubUnavailableError
from lora_lab.models import EMBEDDED_MODEL, HUB_MODEL, bnb_4bit_config, describe_quantization

PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


@pytest.fixture(scope="module")
def model():
    return load_base_model()


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()


def test_is_a_llama_with_the_seven_projections(model):
    from transformers import LlamaForCausalLM

    assert isinstance(model, LlamaForCausalLM)
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    assert names == PROJECTIONS | {"lm_head"}


def test_every_linear_input_is_a_multiple_of_64(model):
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Linear):
            assert m.in_features % 64 == 0, name


def test_size_on_disk_under_20_mb():
    assert (EMBEDDED_MODEL / "model.safetensors").stat().st_size < 20 * 2**20


def test_tokenizer_is_llama_style(tok):
    from transformers import LlamaTokenizer

    assert isinstance(tok, LlamaTokenizer)
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<s>", "</s>", "<pad>")
    assert tok.pad_token_id != tok.eos_token_id
    assert tok.padding_side == "right"
    ids = tok("the cat").input_ids
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    text = "naïve café ☕ 42"  # characters never seen in training: byte fallback, no <unk>
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids and tok.decode(ids) == text


def test_chat_template_matches_the_dataset_format(tok):
    text = load_instruction_dataset(split="eval")[0]["text"]
    prompt, answer = text[len("<s>[INST] "):].split(" [/INST] ")
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer.removesuffix(" </s>")}]
    assert tok.apply_chat_template(messages, tokenize=False) == text


def test_text_with_bos_gets_a_second_one_unless_told(tok):
    # the trap: rows already start with <s>; encoding them with special tokens doubles it
    assert tok("<s>[INST] hi [/INST]").input_ids[:2] == [1, 1]
    assert tok("<s>[INST] hi [/INST]", add_special_tokens=False).input_ids[:2] != [1, 1]


def test_pretrained_model_predicts_the_corpus(model, tok):
    from lora_lab.corpus import generate_corpus

    info = json.loads((EMBEDDED_MODEL / "pretrain_loss.json").read_text())
    docs = generate_corpus(n_docs=64, seed=123)  # fresh text from the same generator
    enc = tok(docs[:32], return_tensors="pt", padding=True, truncation=True, max_length=128)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    with torch.no_grad():
        loss = model(**enc, labels=labels).loss.item()
    assert loss < info["final_loss"] + 0.25  # the saved weights are the trained ones
    assert info["log"][0]["loss"] > 2 * info["final_loss"]  # and training really lowered the loss


def test_base_model_cannot_do_the_tasks_yet(model, tok):
    score = evaluate(model, tok, load_instruction_dataset(split="eval"))
    assert score["n"] >= 200
    assert score["accuracy"] <= 0.20, score["per_task"]


def test_loads_in_4bit_nf4_on_cpu(model, tok):
    q = load_base_model(quantization="nf4")
    info = describe_quantization(q)
    assert info == {"quantized_layers": 28, "quant_type": "nf4", "double_quant": True, "blocksize": 64,
                    "compute_dtype": "float32"}
    enc = tok(["a cat is a animal."], return_tensors="pt")
    with torch.no_grad():
        p_full = model(**enc).logits.softmax(-1)
        p_4bit = q(**enc).logits.softmax(-1)
    assert (p_full - p_4bit).abs().max() < 0.15  # 4-bit rounding moves the distribution a little
    assert (p_full.argmax(-1) == p_4bit.argmax(-1)).float().mean() > 0.7
    # the eval forward above left the stored weights as loaded (no one-way CPU repacking on any CPU)
    assert describe_quantization(q) == info
    states = [m.weight.quant_state for m in q.modules() if hasattr(m, "support_avx512bf16_for_cpu")]
    assert len(states) == 28 and not any(getattr(s, "packing_format_for_cpu", False) for s in states)


def test_a_bare_bitsandbytes_config_is_fp4_without_double_quant():
    from transformers import BitsAndBytesConfig

    q = load_base_model(quantization=BitsAndBytesConfig(load_in_4bit=True))
    assert describe_quantization(q)["quant_type"] == "fp4" and not describe_quantization(q)["double_quant"]
    assert bnb_4bit_config().bnb_4bit_quant_type == "nf4"


def test_bad_quantization_argument():
    with pytest.raises(ValueError, match="quant_type='int4'"):
        load_base_model(quantization="int4")
    with pytest.raises(TypeError, match="quantization=8"):
        load_base_model(quantization=8)


def test_hub_model_offline_fails_at_once_with_advice():
    t0 = time.time()
    with pytest.raises(HubUnavailableError, match=r"NousResearch/Llama-2-7b-chat-hf.*embedded"):
        load_base_model(HUB_MODEL)
    with pytest.raises(HubUnavailableError):
        load_tokenizer(HUB_MODEL)
    assert time.time() - t0 < 5
