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
# # 04 · Solutions: NF4 from scratch
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/solutions/04_nf4_from_scratch_solutions.ipynb)
#
# Worked answers to the exercises of [notebook 04](https://github.com/lora-lab/lora-lab/blob/main/notebooks/04_nf4_from_scratch.ipynb). Each answer is
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
from lora_lab.exercises import check_bits_per_param, check_nf_codebook, check_unpack_codes

torch.manual_seed(0)
versions()

# %% [markdown]
# **Exercise 1.** High nibble first, then low; drop the padding code of an odd count.

# %%
def unpack_codes(packed: torch.Tensor, n: int) -> torch.Tensor:
    pairs = torch.stack([packed >> 4, packed & 0xF], dim=1)  # (bytes, 2): first code, second code
    return pairs.flatten()[:n]


check_unpack_codes(unpack_codes)

# %%
# low nibble first: a wrong answer, and what the check says of it
check_unpack_codes(lambda packed, n: torch.stack([packed & 0xF, packed >> 4], dim=1).flatten()[:n])

# %% [markdown]
# **Exercise 2.** The notebook's construction with 2^(bits−1) in place of 8. Computing the quantiles in
# float64 reproduces bitsandbytes' table to the last bit.

# %%
def normal_float_codebook(bits: int) -> torch.Tensor:
    normal = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    half = 2 ** (bits - 1)
    offset = 1 - 0.5 * (1 / (2 * (2**bits - 1)) + 1 / (2 * 2**bits))
    positive = normal.icdf(torch.linspace(offset, 0.5, half + 1, dtype=torch.float64)[:-1])  # half values
    negative = -normal.icdf(torch.linspace(offset, 0.5, half, dtype=torch.float64)[:-1])  # half - 1 values
    values = torch.cat([negative, torch.zeros(1, dtype=torch.float64), positive]).sort().values
    return (values / values.max()).float()


check_nf_codebook(normal_float_codebook)

# %%
# symmetric quantiles leave no exact zero: a wrong answer, and what the check says of it
check_nf_codebook(lambda bits: torch.distributions.Normal(0.0, 1.0).icdf(torch.linspace(0.03, 0.97, 2**bits)) / 1.8808)

# %% [markdown]
# **Exercise 3.** 4 bits of code; an fp32 absmax per block (32 / blocksize); with double quantization
# an 8-bit code per block (8 / blocksize) plus an fp32 scale per 256 blocks (32 / (256 · blocksize)).

# %%
def bits_per_param(blocksize: int, double_quant: bool) -> float:
    if double_quant:
        return 4 + 8 / blocksize + 32 / (256 * blocksize)
    return 4 + 32 / blocksize


check_bits_per_param(bits_per_param)

# %%
# forgetting the second-level scales: a wrong answer, and what the check says of it
check_bits_per_param(lambda blocksize, double_quant: 4 + (8 if double_quant else 32) / blocksize)
