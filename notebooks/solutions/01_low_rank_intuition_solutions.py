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
# # 01 · Solutions: low-rank intuition
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/solutions/01_low_rank_intuition_solutions.ipynb)
#
# Worked answers to the exercises of [notebook 01](https://github.com/lora-lab/lora-lab/blob/main/notebooks/01_low_rank_intuition.ipynb). Each answer is
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
import torch

from lora_lab.env import versions
from lora_lab.exercises import check_lora_factors, check_max_useful_rank, check_rank_r_matrix

torch.manual_seed(0)
versions()

# %% [markdown]
# **Exercise 1.** A (d × r) times (r × k) product has rank at most r, and with random factors exactly r.

# %%
def rank_r_matrix(d: int, k: int, r: int) -> torch.Tensor:
    return torch.randn(d, r) @ torch.randn(r, k)  # the shape of LoRA's B @ A


check_rank_r_matrix(rank_r_matrix)

# %%
# a random d × k matrix is full rank: a wrong answer, and what the check says of it
check_rank_r_matrix(lambda d, k, r: torch.randn(d, k))

# %% [markdown]
# **Exercise 2.** Truncate the SVD and split the singular values between the factors (√S on each side
# keeps B and A of similar size; all of S in B works as well).

# %%
def lora_factors(delta: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)  # (d, n), (n,), (n, k)
    root = s[:r].sqrt()
    return u[:, :r] * root, root[:, None] * vh[:r]  # B (d, r), A (r, k)


check_lora_factors(lora_factors)

# %%
# forgetting the singular values: a wrong answer, and what the check says of it
check_lora_factors(lambda delta, r: (torch.linalg.svd(delta)[0][:, :r], torch.linalg.svd(delta)[2][:r]))

# %% [markdown]
# **Exercise 3.** d·r + r·k < d·k ⇔ r < d·k / (d + k); the largest such integer is ⌊(d·k − 1) / (d + k)⌋.

# %%
def max_useful_rank(d: int, k: int) -> int:
    return (d * k - 1) // (d + k)


check_max_useful_rank(max_useful_rank)

# %%
# r = min(d, k) is the most a rank can be, not the most that saves memory: a wrong answer, and what the check says of it
check_max_useful_rank(lambda d, k: min(d, k))
