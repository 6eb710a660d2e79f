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
# # 03 · Solutions: LoRA vs PEFT
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/solutions/03_lora_vs_peft_solutions.ipynb)
#
# Worked answers to the exercises of [notebook 03](https://github.com/lora-lab/lora-lab/blob/main/notebooks/03_lora_vs_peft.ipynb). Each answer is followed by
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
import logging

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # on AVX512-BF16 CPUs it advises `pip install kernels`: not needed here

import warnings

import peft
import torch
from torch import nn

from lora_lab.env import versions
from lora_lab.exercises import check_all_linear_targets, check_copy_adapter, check_gpt2_lora_config

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")  # a deprecation inside PEFT 0.21
torch.manual_seed(0)
versions()

# %% [markdown]
# **Exercise 1.** GPT-2's attention projections are one fused `Conv1D`, `c_attn`, stored (in, out).

# %%
def gpt2_lora_config() -> peft.LoraConfig:
    return peft.LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["c_attn"],
                           fan_in_fan_out=True, task_type="CAUSAL_LM")


check_gpt2_lora_config(gpt2_lora_config)

# %%
# the tutorial's Llama names: a wrong answer, and what the check says of it
check_gpt2_lora_config(lambda: peft.LoraConfig(r=8, lora_alpha=32, lora_dropout=0.1, target_modules=["q_proj", "v_proj"],
                                                task_type="CAUSAL_LM"))

# %% [markdown]
# **Exercise 2.** Walk the modules, keep the `nn.Linear` ones, skip the output head (whatever it is
# called: `lm_head` in Llama, `output_projection` in BioGPT — `model.get_output_embeddings()` finds it
# by what it is, not by its name), and keep the last part of each name.

# %%
def linear_layer_names(model) -> list[str]:
    head = model.get_output_embeddings()
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                   if isinstance(m, nn.Linear) and m is not head})


check_all_linear_targets(linear_layer_names)

# %%
# Llama's seven names, hard-coded: a wrong answer, and what the check says of it
check_all_linear_targets(lambda model: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])

# %% [markdown]
# **Exercise 3.** PEFT's names are ours with a `base_model.model.` prefix and the adapter name
# (`default`) after `lora_A` / `lora_B`.

# %%
def copy_peft_to_lora_lab(peft_model, our_model) -> None:
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, p in our_model.named_parameters():
            if ".lora_A." in name or ".lora_B." in name:
                key = "base_model.model." + name.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default.")
                p.copy_(theirs[key])


check_copy_adapter(copy_peft_to_lora_lab)

# %%
def forgets_adapter_name(peft_model, our_model) -> None:
    theirs = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, p in our_model.named_parameters():
            if "base_model.model." + name in theirs:
                p.copy_(theirs["base_model.model." + name])


# a wrong answer, and what the check says of it
check_copy_adapter(forgets_adapter_name)
