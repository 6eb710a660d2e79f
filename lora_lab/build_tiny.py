"""Rebuild the embedded defaults in data/: the instruction data, the tokenizer and the tiny Llama.

    python -m lora_lab.build_tiny            # everything (about 10 minutes on a 2-core CPU)
    python -m lora_lab.build_tiny --only data

The model is a real, if very small, Llama: `LlamaForCausalLM` with the same seven projections as
Llama-2-7B, pretrained here on the generated corpus of lora_lab/corpus.py. Every run with the same
seed and thread count gives the same weights.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from .corpus import generate_corpus
from .paths import DATA_DIR
from .tasks import make_splits

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]  # ids 0..3, then the 256 byte tokens <0x00>..<0xFF>

# Llama-2's chat template, reduced to what the kit uses: [INST] user [/INST] assistant </s>.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ ' ' + m['content'] + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)


def tiny_llama_config(vocab_size: int = 1536):
    """The tiny model's shape: every projection's input (192 or 512) is a multiple of 64, the 4-bit blocksize.

    bitsandbytes 0.50's CPU kernel on AVX-512 CPUs dequantizes wrong values otherwise (lora_lab.bnb_cpu).
    """
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=192,              # d_model; q/k/v/o and gate/up take 192 inputs
        intermediate_size=512,        # MLP width; down_proj takes 512 inputs
        num_hidden_layers=4,
        num_attention_heads=4,        # head_dim 48
        num_key_value_heads=4,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,    # like Llama-2: lm_head is its own matrix
        bos_token_id=1, eos_token_id=2, pad_token_id=3,
    )


# ----------------------------------------------------------------------------- data

def build_dataset(out_dir: Path, seed: int = 0) -> dict:
    """Write train.jsonl and eval.jsonl with one `text` field per row (guanaco-llama2-1k's schema)."""
    train, evals = make_splits(seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("eval", evals)):
        with open(out_dir / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for ex in rows:
                f.write(json.dumps({"text": ex.text}, ensure_ascii=False) + "\n")
    return {"train": len(train), "eval": len(evals)}


# ----------------------------------------------------------------------------- tokenizer

def train_tokenizer(texts: list[str], vocab_size: int = 1536):
    """A Llama-style tokenizer: BPE over Metaspace-split words with byte fallback (no <unk> for unseen text)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaTokenizer

    n_fixed = len(SPECIAL_TOKENS) + 256
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - n_fixed, show_progress=False)
    bpe.train_from_iterator(texts, trainer=trainer)
    learned = json.loads(bpe.to_str())["model"]

    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    vocab.update({f"<0x{b:02X}>": len(SPECIAL_TOKENS) + b for b in range(256)})
    for tok, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(tok, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]

    tok = LlamaTokenizer(
        vocab=vocab, merges=merges, legacy=False,
        pad_token="<pad>",       # its own token: with pad = </s> a model never learns to stop
        add_bos_token=True,      # like Llama-2: every encoded text starts with <s>
        padding_side="right",    # right padding for training; batched generation switches to left
        model_max_length=256,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


# ----------------------------------------------------------------------------- pretraining

def pretrain(tok, docs: list[str], steps: int, seed: int = 0, batch_size: int = 32, seq_len: int = 128,
             lr: float = 3e-3, log_every: int = 10):
    """Next-token pretraining of the tiny Llama on `docs`; returns (model, loss log)."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    ids = tok(docs, add_special_tokens=False)["input_ids"]
    stream = torch.tensor([t for doc in ids for t in [tok.bos_token_id, *doc, tok.eos_token_id]])
    n_chunks = len(stream) // seq_len
    chunks = stream[: n_chunks * seq_len].view(n_chunks, seq_len)  # (N, T)

    config = tiny_llama_config(len(tok))
    model = LlamaForCausalLM(config)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:  # linear warmup, cosine decay to 10%
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, steps - warmup)
        return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))

    g = torch.Generator().manual_seed(seed)
    log, t0 = [], time.time()
    model.train()
    for step in range(steps):
        batch = chunks[torch.randint(0, n_chunks, (batch_size,), generator=g)]  # (B, T)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            log.append({"step": step, "loss": round(loss.item(), 4)})
            print(f"step {step:5d}  loss {loss.item():.4f}  {time.time() - t0:6.1f}s", flush=True)
    model.eval()
    return model, {"log": log, "tokens_seen": steps * batch_size * seq_len, "corpus_tokens": len(stream),
                   "seconds": round(time.time() - t0, 1)}


def save_loss_plot(log: list[dict], path: Path) -> None:
    """A small PNG of the pretraining loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3), dpi=80)
    ax.plot([r["step"] for r in log], [r["loss"] for r in log])
    ax.set(xlabel="step", ylabel="loss", title="tiny Llama pretraining", yscale="log")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def build_model(out_dir: Path, steps: int = 1000, seed: int = 0, n_docs: int = 25_000) -> dict:
    """Generate the corpus, train the tokenizer, pretrain the model and save all of it to `out_dir`."""
    torch.set_num_threads(2)  # same thread count, same floating-point sums, same weights
    docs = generate_corpus(n_docs=n_docs, seed=seed)
    train_rows = [ex.text for ex in make_splits(seed=seed)[0]]
    tok = train_tokenizer(docs + train_rows)
    model, stats = pretrain(tok, docs, steps=steps, seed=seed)

    out_dir.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    final = sum(r["loss"] for r in stats["log"][-5:]) / len(stats["log"][-5:])
    info = {
        "seed": seed, "steps": steps, "n_docs": n_docs, "corpus_chars": sum(len(d) + 1 for d in docs),
        "corpus_tokens": stats["corpus_tokens"], "tokens_seen": stats["tokens_seen"],
        "final_loss": round(final, 4), "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": stats["seconds"], "torch": torch.__version__,
    }
    (out_dir / "pretrain_loss.json").write_text(json.dumps({**info, "log": stats["log"]}, indent=1) + "\n")
    save_loss_plot(stats["log"], out_dir / "pretrain_loss.png")
    return info


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m lora_lab.build_tiny", description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=["data", "model"], help="rebuild only the instruction data or only the model")
    p.add_argument("--out", type=Path, default=DATA_DIR, help="folder that receives tiny-llama/ and tiny-instruct/")
    p.add_argument("--steps", type=int, default=1000, help="pretraining steps (batch 32 x 128 tokens)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.only in (None, "data"):
        print("instruction data:", build_dataset(args.out / "tiny-instruct", seed=args.seed))
    if args.only in (None, "model"):
        print("tiny model:", build_model(args.out / "tiny-llama", steps=args.steps, seed=args.seed))


if __name__ == "__main__":
    main()
