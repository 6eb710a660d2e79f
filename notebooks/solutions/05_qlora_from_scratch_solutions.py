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
# # 05 · Solutions: QLoRA from scratch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/solutions/05_qlora_from_scratch_solutions.ipynb)
#
# Worked answers to the exercises of [notebook 05](https://github.com/lora-lab/lora-lab/blob/main/notebooks/05_qlora_from_scratch.ipynb). Each answer is
# followed by the same check the notebook calls, and then by a typical wrong answer and what the check
# says to it. Try the exercises yourself first.

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
import math

import torch

from lora_lab import num
from lora_lab.env import versions
from lora_lab.exercises import check_nf4_bytes, check_qlora_forward
from lora_lab.qlora import QLoRALinear

torch.manual_seed(0)
versions()

# %% [markdown]
# **Exercise 1.** Dequantize the frozen weight, apply it like any linear layer, and add the adapter's
# path scaled by α/r. The adapter sees the input in fp32, whatever the base computes in.

# %%
def qlora_forward(layer: QLoRALinear, x: torch.Tensor) -> torch.Tensor:
    w = layer.base_layer.dequantize()  # (out, in) in the compute dtype
    h = x @ w.T + layer.base_layer.bias  # (..., out)
    return h + (x @ layer.lora_A.weight.T @ layer.lora_B.weight.T) * layer.scaling  # A: (r, in), B: (out, r)


check_qlora_forward(qlora_forward)

# %%
# forgetting α/r: a wrong answer, and what the check says of it
check_qlora_forward(lambda layer, x: x @ layer.base_layer.dequantize().T + layer.base_layer.bias
                    + x @ layer.lora_A.weight.T @ layer.lora_B.weight.T)

# %% [markdown]
# **Exercise 2.** Half a byte per weight, rounded up, plus the block scales. Without double
# quantization each block keeps a 4-byte fp32 absmax: 32/64 = 0.5 extra bits per weight. With it, each
# block keeps a 1-byte code of its absmax, and each group of 256 blocks one fp32 scale, plus one fp32
# offset for the whole tensor: 8/64 + 32/(64·256) ≈ 0.127 extra bits.

# %%
def nf4_bytes(n_weights: int, blocksize: int = 64, double_quant: bool = True) -> int:
    blocks = math.ceil(n_weights / blocksize)
    codes = math.ceil(n_weights / 2)
    if double_quant:
        return codes + blocks + 4 * math.ceil(blocks / 256) + 4
    return codes + 4 * blocks


print(f"Llama-2-7B's linear layers: {num(nf4_bytes(6_476_005_376) / 2**30):.2f} GiB in NF4 with double quantization")
check_nf4_bytes(nf4_bytes)

# %%
# the 4-bit codes alone: a wrong answer, and what the check says of it
check_nf4_bytes(lambda n, blocksize=64, double_quant=True: math.ceil(n / 2))
