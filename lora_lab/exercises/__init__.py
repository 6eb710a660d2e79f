"""Classroom exercise checks: call one on your answer in a notebook and it tells you, in plain words, what is right or wrong.

`set_language("vi")` makes every check answer in Vietnamese. `EXERCISES` lists every check in notebook
order; each has `exercise_id` ("00.1") and `answer_name` ("compute_dtype_for"), for graders.
"""

from ..i18n import get_language, set_language  # noqa: F401  (the kit's one language setting)

# notebooks 00-04
from .concepts import *  # noqa: F401,F403

# notebooks 05-06
from .finetune import *  # noqa: F401,F403

# notebook 07
from .beyond import *  # noqa: F401,F403

# notebook 08
from .scaling import *  # noqa: F401,F403

EXERCISES = (
    check_compute_dtype, check_weights_gib, check_llama2_format,  # noqa: F405
    check_rank_r_matrix, check_lora_factors, check_max_useful_rank,  # noqa: F405
    check_lora_linear, check_lora_param_count, check_same_scaling_alpha,  # noqa: F405
    check_gpt2_lora_config, check_all_linear_targets, check_copy_adapter,  # noqa: F405
    check_unpack_codes, check_nf_codebook, check_bits_per_param,  # noqa: F405
    check_qlora_forward, check_nf4_bytes,  # noqa: F405
    check_pad_token, check_sampling_probs, check_training_bytes,  # noqa: F405
    check_pool_groups, check_fold_into_zeros, check_dora_magnitude, check_pissa_factors,  # noqa: F405
    check_shard_bytes, check_fsdp_parts, check_dequantize_shard,  # noqa: F405
)
