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
# # 08 · Solutions: beyond one GPU, FSDP-QLoRA
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/solutions/08_fsdp_qlora_solutions.ipynb)
#
# Worked answers to the exercises of [notebook 08](https://github.com/lora-lab/lora-lab/blob/main/notebooks/08_fsdp_qlora.ipynb). Each answer is followed by
# the same check the notebook calls, and then by a typical wrong answer and what the check says to it.
# Try the exercises yourself first.

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

from lora_lab.env import versions
from lora_lab.exercises.scaling import check_dequantize_shard, check_fsdp_parts, check_shard_bytes
from lora_lab.nf4 import nf4_codebook, unpack_4bit

torch.manual_seed(0)
versions()

# %% [markdown]
# **Exercise 1.** A row is never split: every process but the last gets ⌈rows / N⌉ whole rows, the last
# what remains (possibly none), and a row is all the elements after the first dimension.

# %%
def shard_bytes(shape, element_size, world_size, rank):
    row_bytes = element_size * torch.Size(shape[1:]).numel()  # a 1-D parameter's row is one element
    per_process = -(-shape[0] // world_size)  # ceil(rows / N), as torch.chunk cuts
    rows = min(per_process, max(0, shape[0] - rank * per_process))
    return rows * row_bytes


check_shard_bytes(shard_bytes)

# %%
# dividing the bytes evenly, as if a row could be cut: a wrong answer, and what the check says of it
check_shard_bytes(lambda shape, element_size, world_size, rank: torch.Size(shape).numel() * element_size // world_size)

# %% [markdown]
# **Exercise 2.** FSDP splits parameters, their gradients and the optimizer state that follows them. It
# does not touch what is not a parameter: each process's activations come from its own micro-batch, and
# bitsandbytes' block scales live in a `QuantState` beside the weight.

# %%
def fsdp_parts(parts, num_processes):
    kept_whole = ("quant_constants", "activations")  # not parameters: every process keeps its own, whole
    return {part: n if part in kept_whole else n // num_processes for part, n in parts.items()}


check_fsdp_parts(fsdp_parts)

# %%
# dividing everything by N, activations and block scales too: a wrong answer, and what the check says of it
check_fsdp_parts(lambda parts, num_processes: {part: n // num_processes for part, n in parts.items()})

# %% [markdown]
# **Exercise 3.** Unpack the 64 codes of each row (the first in the high nibble, as notebook 04 built
# `unpack_4bit`), look them up in the NF4 table, and scale each row by its block's absmax. Nothing from
# another process is needed: the scales came with the codes.

# %%
def dequantize_shard(codes, absmax):
    blocks = codes.shape[0]
    values = nf4_codebook()[unpack_4bit(codes, blocks * 64).long()].view(blocks, 64)  # in [-1, 1]
    return values * absmax.unsqueeze(1)  # (blocks, 64): each block times its own scale


check_dequantize_shard(dequantize_shard)

# %%
# forgetting the scales: a wrong answer, and what the check says of it
check_dequantize_shard(lambda codes, absmax: nf4_codebook()[unpack_4bit(codes, codes.shape[0] * 64).long()].view(-1, 64))
