"""lora-lab: LoRA and 4-bit NF4 quantization built from scratch, checked against PEFT and bitsandbytes."""

__version__ = "0.1.0"

# --- embedded model and data ---

# --- LoRA ---

# --- NF4 and QLoRA ---
from .nf4 import NF4Tensor, dequantize_nf4, dynamic_map, nf4_codebook, quantize_4bit, quantize_nf4

# --- fine-tuning ---
