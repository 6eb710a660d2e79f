"""lora-lab: LoRA and 4-bit NF4 quantization built from scratch, checked against PEFT and bitsandbytes."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes' CPU backend, on AVX512-BF16 CPUs, advises `pip install kernels` at import time; the kit does
# not use that optional package, so the advice is noise for a learner (the kit imports bitsandbytes later)
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)

# --- the learner's language: what the kit prints and draws, and how it writes numbers ---
from .i18n import format_number, get_language, num, set_language

# --- embedded model and data ---
from .data import load_instruction_dataset
from .evaluate import evaluate, generate_answers
from .models import load_base_model, load_tokenizer

# --- LoRA ---
from .adapters import load_adapter, save_adapter
from .lora import LoraConfig, LoRALinear, count_parameters, inject_lora
from .merge import merge_lora, unmerge_lora

# --- NF4 and QLoRA ---
from .nf4 import NF4Tensor, dequantize_nf4, dynamic_map, nf4_codebook, quantize_4bit, quantize_nf4
from .qlora import NF4Linear, QLoRALinear, get_qlora_model, merge_and_dequantize, quantize_model

# --- fine-tuning ---
from .finetune import FinetuneConfig, resolve_config
from .memory import estimate_memory
