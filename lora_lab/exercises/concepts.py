"""The checks of notebooks 00-04 under one name: `from lora_lab.exercises.concepts import check_…` keeps working.

Each notebook's checks live in their own module (start_here, low_rank, lora_from_scratch, lora_vs_peft,
nf4_from_scratch); the Verdict they return is in `verdict`.
"""

from .lora_from_scratch import check_lora_linear, check_lora_param_count, check_same_scaling_alpha
from .lora_vs_peft import check_all_linear_targets, check_copy_adapter, check_gpt2_lora_config
from .low_rank import check_lora_factors, check_max_useful_rank, check_rank_r_matrix
from .nf4_from_scratch import check_bits_per_param, check_nf_codebook, check_unpack_codes
from .start_here import check_compute_dtype, check_llama2_format, check_weights_gib
from .verdict import Verdict

__all__ = [
    "Verdict",
    # 00 start here
    "check_compute_dtype", "check_weights_gib", "check_llama2_format",
    # 01 low-rank intuition
    "check_rank_r_matrix", "check_lora_factors", "check_max_useful_rank",
    # 02 LoRA from scratch
    "check_lora_linear", "check_lora_param_count", "check_same_scaling_alpha",
    # 03 LoRA vs PEFT
    "check_gpt2_lora_config", "check_all_linear_targets", "check_copy_adapter",
    # 04 NF4 from scratch
    "check_unpack_codes", "check_nf_codebook", "check_bits_per_param",
]
