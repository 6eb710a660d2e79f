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
# # 02 · Solutions: LoRA from scratch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/solutions/02_lora_from_scratch_solutions.ipynb)
#
# Worked answers to the exercises of [notebook 02](https://github.com/lora-lab/lora-lab/blob/main/notebooks/02_lora_from_scratch.ipynb). Each answer is
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
from torch import nn

from lora_lab.env import versions
from lora_lab.exercises import check_lora_linear, check_lora_param_count, check_same_scaling_alpha

torch.manual_seed(0)
versions()

# %% [markdown]
# **Exercise 1.** The layer of the notebook plus a `merged` flag: `merge()` adds ΔW = (α/r)·B·A into
# the base weight and switches the LoRA path off; `unmerge()` subtracts it and switches it back on.

# %%
class MyLoRALinear(nn.Module):
    def __init__(self, base_layer: nn.Linear, r: int, lora_alpha: float, lora_dropout: float = 0.0):
        super().__init__()
        self.base_layer = base_layer.requires_grad_(False)  # W0, frozen
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False)  # A: (r, k)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False)  # B: (d, r)
        nn.init.normal_(self.lora_A.weight, std=1 / r)
        nn.init.zeros_(self.lora_B.weight)
        self.lora_dropout = nn.Dropout(lora_dropout)
        self.scaling = lora_alpha / r
        self.merged = False

    def forward(self, x):
        out = self.base_layer(x)
        if self.merged:  # ΔW already lives in the base weight
            return out
        return out + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def delta_weight(self) -> torch.Tensor:
        return self.lora_B.weight @ self.lora_A.weight * self.scaling  # (d, r) @ (r, k) -> (d, k)

    @torch.no_grad()
    def merge(self):
        if not self.merged:
            self.base_layer.weight += self.delta_weight()
            self.merged = True

    @torch.no_grad()
    def unmerge(self):
        if self.merged:
            self.base_layer.weight -= self.delta_weight()
            self.merged = False


check_lora_linear(MyLoRALinear)

# %%
class MergesTwice(MyLoRALinear):  # merges, but keeps adding the LoRA path afterwards
    @torch.no_grad()
    def merge(self):
        self.base_layer.weight += self.delta_weight()


# a wrong answer, and what the check says of it
check_lora_linear(MergesTwice)

# %% [markdown]
# **Exercise 2.** Each adapted layer adds A (r × in) and B (out × r): r·(in + out) parameters.

# %%
def lora_param_count(shapes: list[tuple[int, int]], r: int) -> int:
    return sum(r * (d_out + d_in) for d_out, d_in in shapes)


check_lora_param_count(lora_param_count)

# %%
# counting only A: a wrong answer, and what the check says of it
check_lora_param_count(lambda shapes, r: sum(r * d_in for _, d_in in shapes))

# %% [markdown]
# **Exercise 3.** Keep α/r (or α/√r) constant: α_new = α · new_r / r, or α · √(new_r / r) with rsLoRA.

# %%
def same_scaling_alpha(lora_alpha: float, r: int, new_r: int, use_rslora: bool = False) -> float:
    return lora_alpha * (math.sqrt(new_r / r) if use_rslora else new_r / r)


check_same_scaling_alpha(same_scaling_alpha)

# %%
# the plain-LoRA rule applied to rsLoRA too: a wrong answer, and what the check says of it
check_same_scaling_alpha(lambda lora_alpha, r, new_r, use_rslora=False: lora_alpha * new_r / r)
