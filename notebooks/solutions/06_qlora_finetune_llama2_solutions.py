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
# # 06 · Solutions: the QLoRA fine-tune of Llama-2
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/lora-lab/lora-lab/blob/main/notebooks/solutions/06_qlora_finetune_llama2_solutions.ipynb)
#
# Worked answers to the exercises of [notebook 06](https://github.com/lora-lab/lora-lab/blob/main/notebooks/06_qlora_finetune_llama2.ipynb). Each answer is
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
from lora_lab.exercises import check_pad_token, check_sampling_probs, check_training_bytes

versions()

# %% [markdown]
# **Exercise 1.** Keep a real pad token; otherwise borrow `<unk>`, a token the model never has to
# predict in these rows. Never the EOS token: the model must learn to produce it.

# %%
def pad_token_for(tokenizer) -> str:
    if tokenizer.pad_token is not None and tokenizer.pad_token_id != tokenizer.eos_token_id:
        return tokenizer.pad_token
    return tokenizer.unk_token


check_pad_token(pad_token_for)

# %%
# the classic recipe's choice: a wrong answer, and what the check says of it
check_pad_token(lambda tokenizer: tokenizer.eos_token)

# %% [markdown]
# **Exercise 2.** Divide by T, then keep the k largest logits and set the rest to −∞, so that the softmax
# gives them probability 0 and spreads the whole mass over the kept ones. (Top-k before or after the
# division picks the same tokens: dividing by T > 0 keeps their order.)

# %%
def sampling_probs(logits: torch.Tensor, temperature: float, top_k: int | None = None) -> torch.Tensor:
    scaled = logits / temperature
    if top_k:
        kth = scaled.topk(top_k).values[-1]  # the k-th largest logit
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    return torch.softmax(scaled, dim=-1)


check_sampling_probs(sampling_probs)

# %%
# cutting the tail after the softmax, without renormalising: a wrong answer, and what the check says of it
def cut_after_softmax(logits, temperature, top_k=None):
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_k:
        probs = probs * (probs >= probs.topk(top_k).values[-1])
    return probs


check_sampling_probs(cut_after_softmax)

# %% [markdown]
# **Exercise 3.** Per trainable parameter: 4 bytes of weight, 4 of gradient, and the optimizer's state —
# AdamW's two fp32 moments (8 bytes), the 8-bit variant's two 1-byte moments (2), plain SGD none.

# %%
def training_bytes(n_trainable: int, optimizer: str = "adamw") -> int:
    state = {"adamw": 8, "adamw_8bit": 2, "sgd": 0}[optimizer]
    return n_trainable * (4 + 4 + state)


check_training_bytes(training_bytes)

# %%
# the gradients forgotten (4 + 8 bytes): a wrong answer, and what the check says of it
check_training_bytes(lambda n, optimizer="adamw": 12 * n)
