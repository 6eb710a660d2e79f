"""The rebuild script reproduces the committed tokenizer and trains deterministically."""

import json

import torch

from lora_lab.build_tiny import pretrain, tiny_llama_config, train_tokenizer
from lora_lab.corpus import generate_corpus
from lora_lab.paths import EMBEDDED_MODEL
from lora_lab.tasks import make_splits


def test_corpus_is_deterministic_and_holds_no_held_out_question():
    a, b = generate_corpus(n_docs=200, seed=5), generate_corpus(n_docs=200, seed=5)
    assert a == b and a != generate_corpus(n_docs=200, seed=6)
    docs = generate_corpus(n_docs=3000, seed=0)
    text = " ".join(docs)
    held_out = [ex.prompt for ex in make_splits(seed=0)[1]]
    assert not any(f"{p} the answer is" in text for p in held_out)
    assert text.count("? the answer is") > 1000  # questions it does see, answered in running text
    assert "[INST]" not in text  # the chat format is what fine-tuning teaches


def test_tokenizer_rebuilds_byte_for_byte(tmp_path):
    info = json.loads((EMBEDDED_MODEL / "pretrain_loss.json").read_text())
    docs = generate_corpus(n_docs=info["n_docs"], seed=info["seed"])
    tok = train_tokenizer(docs + [ex.text for ex in make_splits(seed=info["seed"])[0]])
    tok.save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tmp_path / name).read_bytes() == (EMBEDDED_MODEL / name).read_bytes(), name


def test_pretraining_is_deterministic_and_learns():
    torch.set_num_threads(2)
    docs = generate_corpus(n_docs=300, seed=1)
    tok = train_tokenizer(docs)
    runs = [pretrain(tok, docs, steps=12, seed=0, batch_size=4, seq_len=32, lr=1e-2, log_every=1) for _ in range(2)]
    (m1, s1), (m2, s2) = runs
    assert [r["loss"] for r in s1["log"]] == [r["loss"] for r in s2["log"]]
    assert all(torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m2.state_dict().values()))
    assert s1["log"][-1]["loss"] < s1["log"][0]["loss"] - 1.0


def test_config_keeps_every_linear_input_a_multiple_of_64():
    c = tiny_llama_config()
    assert c.hidden_size % 64 == 0 and c.intermediate_size % 64 == 0
