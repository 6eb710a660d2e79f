# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · QLoRA from scratch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/05_qlora_from_scratch.ipynb)
#
# QLoRA (Dettmers et al. 2023) fine-tunes a model whose frozen weights are stored in 4 bits: the NF4
# format of notebook 04 under the LoRA adapters of notebook 02. The paper's central claim is that this
# costs nothing in quality: 4-bit QLoRA matched 16-bit LoRA (and full fine-tuning) on every benchmark
# it tried. Here you check that claim at small scale, with code you can read line by line.
#
# In this notebook you will
# - put NF4 and LoRA together into a QLoRA layer and check it against its formula,
# - fine-tune the tiny Llama twice with the same plain PyTorch loop (no Trainer): LoRA over the fp32
#   weights, and QLoRA over 4-bit weights,
# - compare their loss curves and held-out scores,
# - merge the adapter back into the weights three ways, and measure how far the answers drift.

# %%
# Colab only: fetch and install the kit (a local run already has it, from `make lab`). Safe to run
# again: after a second "Run all" or a restart the installed kit is reused. Colab's own torch and
# transformers are kept; the kit's lock file is for local installs only.
import sys

if "google.colab" in sys.modules:
    import importlib.util
    import os
    import subprocess

    kit = "/content/lora-lab"
    if importlib.util.find_spec("lora_lab") is None:
        if not os.path.isdir(kit):
            subprocess.run(["git", "clone", "-q", "--depth", "1", "https://github.com/lora-lab/lora-lab.git", kit],
                           check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", kit], check=True)
        importlib.invalidate_caches()

# %% tags=["nbval-ignore-output"]
import copy
import time

import torch
from transformers.utils import logging

import lora_lab
from lora_lab import LoraConfig, count_parameters, evaluate, inject_lora, merge_lora, plots
from lora_lab.env import versions
from lora_lab.lora import lora_layers
from lora_lab.qlora import QLoRALinear, get_qlora_model, merge_and_dequantize
from lora_lab.tasks import format_llama2, parse_llama2
from lora_lab.train import TrainConfig, tokenize_rows, train

logging.disable_progress_bar()  # no loading bars in the stored outputs
torch.set_num_threads(1)  # a tiny model: one thread loses little, and never fights other jobs for the cores
torch.manual_seed(0)
versions()

# %% [markdown]
# ## The QLoRA layer
#
# A QLoRA layer keeps three things: the frozen weight W as 4-bit NF4 codes with their block scales,
# and the two small LoRA matrices A (r × in) and B (out × r) in fp32. Its forward pass dequantizes W
# into the compute dtype just for the matmul, then adds the adapter:
#
# $$h = \mathrm{dequant}(W_{\mathrm{NF4}})\,x + b + \tfrac{\alpha}{r}\,B A x$$
#
# Only A and B train. Gradients still flow *through* the dequantized weight to the layers below — they
# need it — but never *into* it: the 4-bit codes never change during training.
#
# `lora_lab.qlora.QLoRALinear` wraps an `nn.Linear` this way (it quantizes it first). Check it against
# the formula on the first attention projection of the tiny Llama, with an adapter made non-zero:

# %%
base = lora_lab.load_base_model()
q_proj = base.model.layers[0].self_attn.q_proj
layer = QLoRALinear(copy.deepcopy(q_proj), r=16, lora_alpha=32)
torch.nn.init.normal_(layer.lora_B.weight, std=0.02)  # B starts at zero; pretend it trained
print(layer)

x = torch.randn(4, 192)
w = layer.base_layer.dequantize()  # (192, 192) fp32, rebuilt from 4-bit codes
by_hand = x @ w.T + (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T) * layer.scaling
assert torch.allclose(layer(x), by_hand, atol=1e-5)

stored = layer.base_layer.quant_state
print(f"q_proj weight: {q_proj.weight.numel() * 4:,} bytes in fp32, {stored.nbytes:,} bytes in NF4 "
      f"({stored.bits_per_param:.3f} bits per weight); adapter: {16 * (192 + 192) * 4:,} bytes")
print(f"largest change 4-bit rounding made to a weight: {(w - q_proj.weight).abs().max():.4f} "
      f"(weights span ±{q_proj.weight.abs().max():.3f})")

# %% [markdown]
# ## Two models, one recipe
#
# Both start from the same pretrained tiny Llama with the same adapter: rank 16, α = 32, on all seven
# projections of every layer (QLoRA adapts every linear layer; PEFT's default for Llama is only q and
# v). `inject_lora` wraps the fp32 layers; `get_qlora_model` first quantizes every linear layer but
# the output head to NF4 with double quantization, then wraps them in `QLoRALinear`.

# %%
lora_config = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                              "gate_proj", "up_proj", "down_proj"])
torch.manual_seed(0)
lora_model = inject_lora(lora_lab.load_base_model(), lora_config)
torch.manual_seed(0)
qlora_model = get_qlora_model(lora_lab.load_base_model(), lora_config)


def linear_bytes(model):
    """Bytes the frozen linear weights take (the adapters and embeddings aside)."""
    total = 0
    for name, m in model.named_modules():
        if name.endswith("base_layer"):
            total += m.quant_state.nbytes if hasattr(m, "quant_state") else m.weight.numel() * 4
    return total


rows = []
for label, model in (("LoRA, fp32 base", lora_model), ("QLoRA, NF4 base", qlora_model)):
    trainable, total = count_parameters(model)
    rows.append((label, trainable, total, f"{linear_bytes(model) / 2**20:.2f}"))
plots.print_table(["model", "trainable", "all parameters", "adapted weights (MiB)"], rows)

a_lora = lora_model.model.layers[0].self_attn.q_proj.lora_A.weight
a_qlora = qlora_model.model.layers[0].self_attn.q_proj.lora_A.weight
assert torch.equal(a_lora, a_qlora)  # the same seed drew the same adapter: only the base differs

# %% [markdown]
# ## The training loop
#
# `lora_lab.train.train` is a plain PyTorch loop, short enough to read in one sitting. Each step takes
# 32 rows, right-pads them, runs the model, and computes the cross-entropy **on the answer tokens
# only**: the prompt's labels are set to -100, which the loss skips. Then backward, gradient clipping,
# and an AdamW step on the trainable parameters (A and B) alone.
#
# Here is one row as the loop sees it; `·` marks a token whose label is -100:

# %%
tok = lora_lab.load_tokenizer()
train_texts = list(lora_lab.load_instruction_dataset()["text"])
held_out = lora_lab.load_instruction_dataset(split="eval")
row = tokenize_rows(tok, train_texts[:1])[0]
tokens = tok.convert_ids_to_tokens(row["input_ids"])
print(" ".join(t if label != -100 else "·" for t, label in zip(tokens, row["labels"])))
print(" ".join(tokens))
assert row["input_ids"].count(tok.bos_token_id) == 1  # the row's own <s>; the tokenizer adds none

# %% [markdown]
# Now train both, with the same seed, data order, learning rate (2e-3, large because the model is tiny)
# and number of steps:

# %% tags=["nbval-ignore-output"]
STEPS = 300
runs = {}
for label, model in (("LoRA", lora_model), ("QLoRA", qlora_model)):
    t0 = time.time()
    runs[label] = train(model, tok, train_texts, TrainConfig(steps=STEPS, lr=2e-3, seed=0))
    print(f"{label}: {STEPS} steps in {time.time() - t0:.0f} s, last loss {runs[label].losses[-1]:.3f}")

# %%
def smooth(values, k=10):
    """Moving average over k steps, for a readable curve."""
    return [sum(values[max(0, i - k + 1):i + 1]) / len(values[max(0, i - k + 1):i + 1]) for i in range(len(values))]


fig, (ax,) = plots.figure(width=6, height=3.2)
plots.plot_curves(ax, {label: smooth(run.losses) for label, run in runs.items()},
                  ylabel="loss on answer tokens", title="LoRA vs QLoRA, same recipe")
ax.set_yscale("log")
for run in runs.values():
    assert sum(run.losses[-20:]) / 20 < 0.3 * sum(run.losses[:5]) / 5  # the loss fell

# %% [markdown]
# The two curves lie almost on top of each other. Now the number that matters: exact-match accuracy on
# the 250 held-out instructions, none of which the models saw in training.

# %% tags=["nbval-ignore-output"]
scores = {"base model": evaluate(lora_lab.load_base_model(), tok, held_out)}
scores.update({label: evaluate(model, tok, held_out) for label, model in (("LoRA", lora_model),
                                                                         ("QLoRA", qlora_model))})
tasks = list(scores["LoRA"]["per_task"])
plots.print_table(["model", "all"] + tasks,
                  [(label, f"{s['accuracy']:.1%}", *(f"{s['per_task'][t]:.0%}" for t in tasks))
                   for label, s in scores.items()])
gap = scores["QLoRA"]["accuracy"] - scores["LoRA"]["accuracy"]
print(f"QLoRA - LoRA: {gap:+.1%}")

# %%
assert scores["base model"]["accuracy"] <= 0.20
assert scores["LoRA"]["accuracy"] >= 0.85 and scores["QLoRA"]["accuracy"] >= 0.85
assert abs(gap) <= 0.05  # 4-bit QLoRA within 5 points of fp32 LoRA (one seed; here it was +2.0)

# %% [markdown]
# **What this shows.** Fine-tuning through a 4-bit copy of the weights trained as well as fine-tuning
# the full-precision model: same loss curve, held-out scores a few points apart — the kind of gap a
# different seed also produces. That is the QLoRA paper's finding (its Table 3: NF4 with double
# quantization matched 16-bit LoRA on GLUE and MMLU), here on a 2.4M-parameter model and one seed, so
# read it as a demonstration, not a measurement. Why it works: the adapter trains *against* the
# quantized weights, so whatever the 4-bit rounding changed, the adapter can learn around it.
#
# ## Merging the adapter back
#
# For serving, you fold ΔW = (α/r)·B·A into the weight so inference is a single matmul again. With a
# 4-bit base there are three weights you could fold it into:
#
# 1. **the 4-bit weight itself**: dequantize, add ΔW, quantize again. The sum is rounded to NF4 anew,
#    and most entries of ΔW are smaller than one rounding step, so part of the update is lost;
# 2. **the dequantized weight, kept in fp32** (`merge_and_dequantize`): exact — the merged model
#    computes what base + adapter computed — but it is no longer a 4-bit model: for Llama-2-7B that is
#    13.5 GB in fp16, more than a T4 holds next to anything else (peft#1043);
# 3. **the original full-precision weight** you quantized from: what "reload the base in fp16 and
#    merge" does. But the adapter learned to correct dequant(NF4(W)), not W, so answers drift.
#
# For comparison, LoRA over an fp32 base merges exactly. Each variant is compared with the unmerged
# model it came from: the largest change in any logit over 64 held-out prompts, and the held-out score.

# %%
prompt_batch = tok([format_llama2(parse_llama2(t)[0]) for t in held_out["text"][:64]],
                   add_special_tokens=False, return_tensors="pt", padding=True)


@torch.no_grad()
def logits_of(model):
    return model(**prompt_batch).logits  # (64, T, vocab)


def fold_into_original(qmodel):
    """Variant 3: the QLoRA adapter's ΔW added to a fresh full-precision base."""
    fresh = lora_lab.load_base_model()
    with torch.no_grad():
        for name, layer in lora_layers(qmodel):
            fresh.get_submodule(name).weight += layer.get_delta_weight()
    return fresh


variants = {
    "LoRA → fp32 base (exact)": (lora_model, merge_lora(copy.deepcopy(lora_model))),
    "QLoRA → 4-bit weight (requantized)": (qlora_model, merge_lora(copy.deepcopy(qlora_model))),
    "QLoRA → dequantized weight, fp32": (qlora_model, merge_and_dequantize(copy.deepcopy(qlora_model))),
    "QLoRA → original fp32 weight": (qlora_model, fold_into_original(qlora_model)),
}
drift = {}
for label, (unmerged, merged) in variants.items():
    drift[label] = ((logits_of(merged) - logits_of(unmerged)).abs().max().item(),
                    evaluate(merged, tok, held_out)["accuracy"])

# %% tags=["nbval-ignore-output"]
plots.print_table(["merge", "largest logit change", "held-out score"],
                  [(label, f"{d:.2e}", f"{acc:.1%}") for label, (d, acc) in drift.items()])
print(f"unmerged: LoRA {scores['LoRA']['accuracy']:.1%}, QLoRA {scores['QLoRA']['accuracy']:.1%}")

# %%
exact, requant, dequant, original = (drift[k][0] for k in variants)
assert exact < 1e-3 and dequant < 1e-3  # both exact up to float rounding
assert requant > 100 * dequant and original > 100 * dequant  # the other two really change the model
assert drift["QLoRA → dequantized weight, fp32"][1] == scores["QLoRA"]["accuracy"]

# %% [markdown]
# **What this shows.** Only the exact merges — LoRA into its own fp32 base, QLoRA into its own
# dequantized weights — give back the model you trained. Folding ΔW into the 4-bit codes rounds it
# away in part; folding it into the original weights applies a correction meant for other weights.
# Either may still score close to the unmerged model on a task this easy, but the logits moved, and on
# a real model such drift shows up as changed answers. The rules that follow:
#
# - keep a QLoRA adapter separate (PEFT loads it on top of the 4-bit base at inference), or
# - merge into the *dequantized* 4-bit weights and serve the merged model in 16 bits, or
# - if you must merge into the original base, re-check the merged model before you ship it
#   (QA-LoRA, Xu et al. 2023, trains adapters that merge into a quantized model without this loss).
#
# Notebook 06 runs the same fine-tune with the production tools (TRL's `SFTTrainer`, PEFT,
# bitsandbytes), as you would on Llama-2-7B.
#
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError`, followed by a check. Write your answer
# in place of the `raise`, run the cell, and the check says what is right or wrong. Solutions:
# `notebooks/solutions/05_qlora_from_scratch_solutions.ipynb`.
#
# **Exercise 1.** Compute a `QLoRALinear`'s output from its parts: `layer.base_layer.dequantize()`
# (the weight, out × in), `layer.base_layer.bias`, `layer.lora_A.weight`, `layer.lora_B.weight` and
# `layer.scaling`.

# %%
from lora_lab.exercises import check_nf4_bytes, check_qlora_forward


def qlora_forward(layer: QLoRALinear, x: torch.Tensor) -> torch.Tensor:
    raise NotImplementedError  # your code here


check_qlora_forward(qlora_forward)

# %% [markdown]
# **Exercise 2.** How many bytes do `n_weights` weights take in NF4? Two 4-bit codes per byte, plus
# the block scales: one fp32 absmax per block of `blocksize` weights, or with double quantization one
# byte per block plus one fp32 scale per 256 blocks and a single fp32 offset. (Check your formula
# against the q_proj line printed above.)

# %%
def nf4_bytes(n_weights: int, blocksize: int = 64, double_quant: bool = True) -> int:
    raise NotImplementedError  # your code here


check_nf4_bytes(nf4_bytes)
