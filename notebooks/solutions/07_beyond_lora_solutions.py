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
# # 07 · Solutions: beyond plain LoRA
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/solutions/07_beyond_lora_solutions.ipynb)
#
# Worked answers to the exercises of [notebook 07](https://github.com/lora-lab/lora-lab/blob/main/notebooks/07_beyond_lora.ipynb). Each answer is followed by
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
from lora_lab.exercises.beyond import (
    check_dora_magnitude,
    check_fold_into_zeros,
    check_pissa_factors,
    check_pool_groups,
)

torch.manual_seed(0)
versions()

# %% [markdown]
# **Exercise 1.** Cut the last axis into G groups of `group_size` neighbours — `unflatten(-1, (G,
# group_size))`, with −1 letting torch work out G — and average within each group: that is x̄. (The layer
# then multiplies x̄ by G before A, as PEFT does; G · x̄ is not what `pool_groups` returns.)

# %%
def pool_groups(x: torch.Tensor, group_size: int) -> torch.Tensor:
    return x.unflatten(-1, (-1, group_size)).mean(-1)  # (..., G, group_size) -> (..., G)


check_pool_groups(pool_groups)

# %%
# groups of every G-th feature instead of neighbours: a wrong answer, and what the check says of it
check_pool_groups(lambda x, group_size: x.unflatten(-1, (group_size, -1)).mean(-2))

# %% [markdown]
# **Exercise 2.** W̃ = scale · (q − zero). Adding ΔW to every weight of a group is the same as lowering
# the group's zero point by ΔW / scale; the scales and the codes stay.

# %%
def fold_into_zeros(scales: torch.Tensor, zeros: torch.Tensor, group_delta: torch.Tensor):
    return scales, zeros - group_delta / scales  # (out, G) each


check_fold_into_zeros(fold_into_zeros)

# %%
# folding the update into the scales: each weight would move in proportion to its code: a wrong answer, and what the check says of it
check_fold_into_zeros(lambda scales, zeros, group_delta: (scales + group_delta / (7.5 - zeros), zeros))

# %% [markdown]
# **Exercise 3.** One length per output feature: the norm of each row of the (out × in) adapted weight,
# `dim=1`. This is PEFT's `lora_magnitude_vector` before training.

# %%
def dora_magnitude(weight, lora_A, lora_B, scaling):
    adapted = weight + scaling * lora_B @ lora_A  # (out, in)
    return torch.linalg.norm(adapted, dim=1)  # (out,)


check_dora_magnitude(dora_magnitude)

# %%
# the norm along the wrong axis: a wrong answer, and what the check says of it
check_dora_magnitude(lambda weight, lora_A, lora_B, scaling:
                     torch.linalg.norm(weight + scaling * lora_B @ lora_A, dim=0))

# %% [markdown]
# **Exercise 4.** The top r singular triplets, their values divided by the scaling (the forward
# multiplies B·A by it again), split as a square root on each side; the residual keeps the rest.

# %%
def pissa_factors(weight, r, scaling):
    U, S, Vh = torch.linalg.svd(weight, full_matrices=False)  # (out, k), (k,), (k, in)
    root = torch.sqrt(S[:r] / scaling)
    lora_A = torch.diag(root) @ Vh[:r]  # (r, in)
    lora_B = U[:, :r] @ torch.diag(root)  # (out, r)
    return lora_A, lora_B, weight - scaling * lora_B @ lora_A


check_pissa_factors(pissa_factors)

# %%
# forgetting the scaling: at α/r = 2 the adapter would add twice W0's principal part: a wrong answer, and what the check says of it
check_pissa_factors(lambda weight, r, scaling: pissa_factors(weight, r, 1.0))
