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
# # 00 · Solutions: start here
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/solutions/00_start_here_solutions.ipynb)
#
# Worked answers to the exercises of [notebook 00](https://github.com/lora-lab/lora-lab/blob/main/notebooks/00_start_here.ipynb). Each answer is followed by
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
from lora_lab.exercises import check_compute_dtype, check_llama2_format, check_weights_gib

versions()

# %% [markdown]
# **Exercise 1.** bf16 where the GPU supports it (A100, L4, H100: fp32's range, no loss scaling),
# fp16 on GPUs without it (T4, V100), fp32 on a CPU.

# %%
def compute_dtype_for(gpu_name: str | None, bf16_supported: bool | None) -> torch.dtype:
    if gpu_name is None:  # CPU: half-precision matmuls are slow or missing there
        return torch.float32
    return torch.bfloat16 if bf16_supported else torch.float16


check_compute_dtype(compute_dtype_for)

# %%
# a common slip: bf16 everywhere: a wrong answer, and what the check says of it
check_compute_dtype(lambda gpu_name, bf16_supported: torch.bfloat16)

# %% [markdown]
# **Exercise 2.** bits → bytes (÷ 8) → GiB (÷ 2³⁰).

# %%
def weights_gib(n_params: int, bits_per_param: float) -> float:
    return n_params * bits_per_param / 8 / 2**30


check_weights_gib(weights_gib)

# %%
# dividing by 10⁹ gives GB, not GiB: a wrong answer, and what the check says of it
check_weights_gib(lambda n_params, bits_per_param: n_params * bits_per_param / 8 / 1e9)

# %% [markdown]
# **Exercise 3.** One space around each marker; `<s>` first and `</s>` last, so the model learns where
# a row starts and that it should stop after the answer.

# %%
def llama2_row(prompt: str, answer: str) -> str:
    return f"<s>[INST] {prompt} [/INST] {answer} </s>"


check_llama2_format(llama2_row)

# %%
# without </s> the model never learns to stop: a wrong answer, and what the check says of it
check_llama2_format(lambda prompt, answer: f"<s>[INST] {prompt} [/INST] {answer}")
