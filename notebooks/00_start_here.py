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
# # 00 · Start here
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/00_start_here.ipynb)
#
# **lora-lab** teaches LoRA and QLoRA by building them: you write LoRA and 4-bit NF4 quantization
# from scratch, prove your versions identical to Hugging Face PEFT and bitsandbytes, and then run a
# real QLoRA fine-tune of a Llama-architecture model.
#
# In this notebook you will
# - check what your machine can run (CPU or GPU, fp16 or bf16),
# - meet the embedded tiny Llama and the instruction data every notebook uses on a CPU,
# - see the path through the kit.

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
import torch
from transformers.utils import logging

import lora_lab
from lora_lab import num, plots
from lora_lab.env import describe_environment, gpu_advice, versions

logging.disable_progress_bar()  # no loading bars in the stored outputs
torch.set_num_threads(1)  # tiny matrices: one thread loses little, and never fights other jobs for the cores
versions()

# %% [markdown]
# ## LoRA and QLoRA on one page
#
# **Fine-tuning** continues training a pretrained model on your own examples, so that it follows your
# format or learns your task. Done in full, every parameter trains: for a 7-billion-parameter model that
# means gradients and optimizer state for all 7 billion, over 100 GB of GPU memory.
#
# **LoRA** (Hu et al. 2021) freezes the pretrained weights and trains, next to chosen weight matrices,
# a small *low-rank* update: two thin matrices B and A whose product has the shape of the weight. Two
# settings matter most: the **rank r** (more capacity, more parameters) and **α** (how strongly the
# update is weighted, through the factor α/r). Trainable parameters drop by orders of magnitude, and a
# trained adapter is a small file (16.8 MB in fp32 for Llama-2-7B at r = 8, next to 13.5 GB for the
# model itself in fp16) that can be swapped or merged back into the model.
#
# **QLoRA** (Dettmers et al. 2023) does the same on top of a base model stored in **4 bits** (the NF4
# format), which shrinks the frozen weights about 3.5-fold (13.5 GB → 3.9 GB for Llama-2-7B); the adapter
# itself still trains in 16 or 32 bits. That is what fits a 7B model's fine-tune on a free Colab T4.
#
# Articles often summarise the two like this. The kit does not take the summary on trust; the last
# column says where each row is measured:
#
# | | LoRA | QLoRA | measured in |
# |---|---|---|---|
# | trainable parameters | a small fraction (0.06–2.3% for Llama-2-7B) | the same adapter | 02, 03 |
# | precision of the frozen base | 16 or 32 bits | 4 bits (NF4) | 04 |
# | memory | low | very low | 04 (Llama-2-7B), 05 |
# | quality | close to full fine-tuning | a small cost from 4-bit rounding | 05, 06 |
#
# **Which to use?** When the base model fits in memory in 16 bits with room to train, LoRA is simpler
# and avoids any 4-bit rounding. When memory is the limit — a 7B model on a 16 GB GPU, a bigger model on
# a bigger one — QLoRA makes the fine-tune possible at all.
#
# Neither is limited to text: the same adapters fine-tune translation, summarisation, classification and
# question answering, image generators (style LoRAs are the best-known example) and speech models —
# wherever a network has large linear layers. The hard parts remain choosing r, α, the learning rate and
# the target layers (notebooks 02 and 03 explore them), and that training still wants a GPU for models of
# real size. The tools are Hugging Face **Transformers** (models), **PEFT** (LoRA), **bitsandbytes** (4-bit
# weights), **Accelerate** (devices) and **TRL** (the supervised fine-tuning trainer); lora_lab rebuilds the
# LoRA and NF4 parts from scratch and checks them against PEFT and bitsandbytes. Newer work combines
# adapters with other methods (DoRA, QA-LoRA, rsLoRA), runs them on edge devices, and keeps one adapter
# per user or task for personalisation.
#
# ## What can this machine run?
#
# Everything in the kit runs on a laptop CPU with the embedded tiny model. A GPU unlocks the real
# Llama-2-7B. Which number format the GPU computes in matters: bf16 has fp32's range (up to about
# 3.4 × 10³⁸), so it does not overflow where fp16 does; fp16 has more precision but overflows above
# 65,504 and needs loss scaling. Colab's free T4 has no bf16, so the fine-tune uses fp16 there.

# %% tags=["nbval-ignore-output"]
env = describe_environment()
env

# %% [markdown]
# Whatever this machine is, here is what the kit says on Colab's free GPU, a T4: it has 14.75 GiB of
# usable memory and no bf16, so the fine-tune computes in fp16 there.

# %%
print(gpu_advice("Tesla T4", 14.75, bf16=False))

# %% [markdown]
# ## The embedded tiny Llama
#
# Llama-2-7B takes a GPU. To make every idea runnable in seconds, the kit ships a *tiny* model
# with exactly Llama-2's architecture — the same `LlamaForCausalLM` class with the same seven
# projections (`q_proj k_proj v_proj o_proj gate_proj up_proj down_proj`) in every layer — only
# smaller. It was pretrained by `python -m lora_lab.build_tiny` on a generated English corpus.

# %%
model = lora_lab.load_base_model()
tok = lora_lab.load_tokenizer()
n_params = sum(p.numel() for p in model.parameters())
print(type(model).__name__, f"{num(n_params):,} parameters")
print({k: getattr(model.config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                               "num_attention_heads", "vocab_size")})
assert type(model).__name__ == "LlamaForCausalLM"

# %%
ids = tok("a fox is a animal.").input_ids
print(ids)
print(tok.convert_ids_to_tokens(ids))

# %% [markdown]
# The tokenizer works like Llama-2's: byte-pair merges over words marked with `▁`, `<s>` at the
# start, and bytes (`<0xC3>`) for anything it never saw, so no text is ever `<unk>`.

# %%
print(tok.convert_ids_to_tokens(tok("café", add_special_tokens=False).input_ids))

# %% [markdown]
# ## How the model picks a word: temperature
#
# A language model outputs a score (*logit*) for every token of its vocabulary; softmax turns the scores
# into probabilities. Sampling divides the logits by a **temperature** first: below 1 the distribution
# sharpens (more confident, more repetitive), above 1 it flattens (more diverse, more mistakes), and 1
# leaves it unchanged. Greedy decoding, which the kit uses to score answers, always takes the top token.

# %%
prefix = tok("the", return_tensors="pt").input_ids  # "<s> the": what word comes next?
with torch.no_grad():
    logits = model(prefix).logits[0, -1]  # scores for the next token, (vocab,)
TEMPS = (0.5, 1.0, 2.0)
probs = {t: torch.softmax(logits / t, dim=-1) for t in TEMPS}
top = probs[1.0].topk(8).indices  # the eight likeliest next tokens at T = 1
names = tok.convert_ids_to_tokens(top.tolist())
for t in TEMPS:
    p = probs[t]
    words = ", ".join(f"{names[i]!r} {num(p[top[i]]):.2f}" for i in range(3))
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    print(f"temperature {num(t)}: top three {words}; entropy {num(entropy):.2f} nats "
          f"(as uncertain as a fair choice among {num(entropy.exp()):.0f} tokens)")
entropies = [-(probs[t] * probs[t].clamp_min(1e-12).log()).sum() for t in TEMPS]
assert entropies[0] < entropies[1] < entropies[2]  # higher temperature, more uncertainty
assert probs[0.5][top[0]] > probs[1.0][top[0]] > probs[2.0][top[0]]  # the favourite's share falls

fig, axes = plots.figure(ncols=3, width=3.0, height=2.4)
axes[0].set_ylabel("probability")
for ax, t in zip(axes, TEMPS):
    ax.bar(range(8), probs[t][top].numpy(), color="tab:blue")
    ax.set(xticks=range(8), ylim=(0, 1), title=f"T = {num(t)}")
    ax.set_xticklabels(names, rotation=60, fontsize=7)

# %% [markdown]
# **Entropy** measures how spread out the distribution is: −Σ pᵢ·log pᵢ, in *nats* because the log is
# the natural one. A distribution that is certain of one token has entropy 0; a fair choice among N
# tokens has entropy log N, so e^entropy reads as "as uncertain as a fair choice among that many
# tokens". Lowering the temperature concentrates the probability (low entropy), raising it spreads the
# probability over more of the vocabulary (high entropy); the bars show the same thing for the eight
# likeliest tokens.

# %% [markdown]
# ## The instruction data
#
# The fine-tunes teach the model five small skills, written in the exact format of the
# `mlabonne/guanaco-llama2-1k` dataset that the classic Llama-2 Colab recipe uses:
# `<s>[INST] question [/INST] answer </s>`. A held-out split, never seen in training, scores the
# model by exact match.

# %%
train = lora_lab.load_instruction_dataset()
held_out = lora_lab.load_instruction_dataset(split="eval")
print(len(train), "training rows,", len(held_out), "held-out rows")
for row in held_out.select(range(5)):
    print(row["text"])

# %%
score = lora_lab.evaluate(model, tok, held_out)
print(f"base model, before any fine-tuning: {num(score['accuracy']):.0%} exact match")
for s in score["samples"][:3]:
    print(f"  {s['prompt']!r} -> {s['reply']!r} (expected {s['answer']!r})")
assert score["accuracy"] <= 0.20  # the base model has never seen the [INST] format
third = score["samples"][2]
assert third["reply"].startswith(third["answer"]) and third["reply"] != third["answer"]  # right, but no stop

# %% [markdown]
# Look at the third reply: it starts with the right answer, *the answer is lemon.*, and is still scored
# wrong. Exact match wants the reply to **stop** there. The base model learned the skill from its
# pretraining text, but it has never seen the chat format's end-of-answer token `</s>`, so it rambles on
# until the length limit. Teaching it to answer in the format *and to stop* is what the fine-tunes in
# notebooks 05 and 06 do.

# %% [markdown]
# ## The path through the kit
#
# | notebook | what you build |
# |---|---|
# | 00 start here | this check |
# | 01 low-rank intuition | rank, SVD, and why a fine-tuning update is low-rank |
# | 02 LoRA from scratch | `LoRALinear`, step by step, with sliders for r and α |
# | 03 LoRA vs PEFT | your LoRA and PEFT side by side: identical numbers |
# | 04 NF4 from scratch | 4-bit NormalFloat, double quantization, bit-exact with bitsandbytes |
# | 05 QLoRA from scratch | a 4-bit base with a LoRA adapter, trained in a plain loop |
# | 06 QLoRA fine-tune of Llama-2 | the full recipe: tiny model on CPU, Llama-2-7B on a Colab T4 |
# | 07 beyond plain LoRA | QA-LoRA's exact 4-bit merge, DoRA, PiSSA and LoftQ, each checked against PEFT |
#
# Each notebook runs top to bottom on a 2-core CPU in under 90 seconds (`make test` fails a notebook
# that takes over twice that while sharing the cores with another test). To open one in Colab, click
# the *Open in Colab* badge at its top (or in the README): Colab loads it from GitHub, and its first code
# cell installs the kit, about a minute the first time. Every notebook but 06's Llama-2 path runs on Colab's CPU runtime too; for
# Llama-2-7B in notebook 06, choose *Runtime → Change runtime type → T4 GPU* before running. Each
# notebook ends with exercises whose checks tell you what is right or wrong; the solutions are in
# `notebooks/solutions/`.
#
# ## Exercises
#
# Each exercise has a stub that raises `NotImplementedError`, followed by a check. Write your answer
# in place of the `raise`, run the cell, and the check says what is right or wrong. Solutions:
# `notebooks/solutions/00_start_here_solutions.ipynb`.
#
# **Exercise 1.** Write `compute_dtype_for(gpu_name, bf16_supported)`: the torch dtype the fine-tune
# should compute in — `gpu_name` is `None` on a CPU.

# %%
from lora_lab.exercises import check_compute_dtype, check_llama2_format, check_weights_gib


def compute_dtype_for(gpu_name: str | None, bf16_supported: bool | None) -> torch.dtype:
    raise NotImplementedError  # your code here


check_compute_dtype(compute_dtype_for)

# %% [markdown]
# **Exercise 2.** Write `weights_gib(n_params, bits_per_param)`: the memory the weights take, in GiB
# (2³⁰ bytes, the unit GPU memory is quoted in). Try it on Llama-2-7B's 6,738,415,616 parameters at 16
# bits and at 4.127.

# %%
def weights_gib(n_params: int, bits_per_param: float) -> float:
    raise NotImplementedError  # your code here


check_weights_gib(weights_gib)

# %% [markdown]
# **Exercise 3.** Write `llama2_row(prompt, answer)`: one training row in the data's format, as shown in
# the instruction data above.

# %%
def llama2_row(prompt: str, answer: str) -> str:
    raise NotImplementedError  # your code here


check_llama2_format(llama2_row)
