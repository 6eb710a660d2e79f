# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
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
# Colab only: fetch and install the kit. A local run already has it (`make lab`).
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run("git clone -q --depth 1 https://github.com/lora-lab/lora-lab.git /content/lora-lab "
                   "&& pip install -q -e /content/lora-lab", shell=True, check=True)
    sys.path.insert(0, "/content/lora-lab")

# %% tags=["nbval-ignore-output"]
import lora_lab
from lora_lab.env import describe_environment, gpu_advice, versions

versions()

# %% [markdown]
# ## What can this machine run?
#
# Everything in the kit runs on a laptop CPU with the embedded tiny model. A GPU unlocks the real
# Llama-2-7B. Which number format the GPU computes in matters: bf16 has fp32's range and never
# overflows, fp16 has more precision but overflows above 65,504 and needs loss scaling. Colab's free
# T4 has no bf16, so the fine-tune uses fp16 there.

# %% tags=["nbval-ignore-output"]
env = describe_environment()
env

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
print(type(model).__name__, f"{n_params:,} parameters")
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
print(f"base model, before any fine-tuning: {score['accuracy']:.0%} exact match")
for s in score["samples"][:3]:
    print(f"  {s['prompt']!r} -> {s['reply']!r} (expected {s['answer']!r})")
assert score["accuracy"] <= 0.20  # the base model has never seen the [INST] format

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
#
# Each notebook opens in Colab from its badge, and runs on a CPU in under two minutes.
