"""What a fine-tune's settings become on a given machine: the hardware, the plan (precision, optimizer,
device map), TRL's SFTConfig arguments, the layers LoRA will wrap and the memory it will need.

Nothing here loads weights: a setting the machine cannot run, or a target that matches no layer, is
refused before the model loads.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from .config import FinetuneConfig
from .lora import _features, check_rank, find_target_modules
from .memory import estimate_memory, llama2_7b_config, meta_model
from .models import HUB_MODEL
from .paths import EMBEDDED_MODEL

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class NoGPUError(RuntimeError):
    """A profile that needs a GPU was started on a machine without one."""


@dataclass(frozen=True)
class Hardware:
    device: str = "cpu"           # "cpu" or "cuda"
    gpu: str | None = None        # e.g. "Tesla T4"
    bf16: bool = False            # can the GPU compute in bf16?
    memory_gib: float | None = None

    @classmethod
    def detect(cls) -> "Hardware":
        if not torch.cuda.is_available():
            return cls()
        props = torch.cuda.get_device_properties(0)
        return cls("cuda", props.name, torch.cuda.is_bf16_supported(), props.total_memory / 2**30)


T4 = Hardware("cuda", "Tesla T4", False, 14.75)  # Colab's free GPU, for planning without one


def needs_gpu(config: FinetuneConfig) -> bool:
    """Llama-2-7B needs a GPU; the same profile pointed at a local small model does not."""
    return config.model == HUB_MODEL


def plan(config: FinetuneConfig, hardware: Hardware | None = None) -> dict:
    """What this machine makes of the config: precision, 4-bit compute dtype, optimizer, where the model goes."""
    hw = hardware or Hardware.detect()
    if hw.device == "cpu" and needs_gpu(config):
        raise NoGPUError(
            f"profile {config.profile!r} fine-tunes {config.model}, which needs a GPU, and this machine has none. "
            "In Colab pick Runtime > Change runtime type > T4 GPU; on this machine run the same recipe on the "
            "embedded tiny Llama: `lora-lab finetune --profile tiny`.")
    precision = config.precision
    if precision == "auto":
        precision = "fp32" if hw.device == "cpu" else "bf16" if hw.bf16 else "fp16"
    if hw.device == "cpu" and precision != "fp32":
        raise ValueError(f"precision={precision!r}: on a CPU the fine-tune computes in fp32 (mixed precision needs a GPU)")
    if precision == "bf16" and not hw.bf16:  # "Your setup doesn't support bf16/gpu"
        raise ValueError(f"precision='bf16': the {hw.gpu} has no bf16 (a T4 has none); use precision='fp16' or 'auto'")
    optim, note = config.optim, None
    if optim == "auto":
        optim = "paged_adamw_32bit" if hw.device == "cuda" else "adamw_torch"
    if hw.device == "cpu" and optim.startswith("paged_"):  # paged optimizers page state through CUDA memory
        optim, note = "adamw_torch", f"optim={config.optim!r} needs a GPU: using 'adamw_torch' on this CPU"
    from accelerate import PartialState
    index = PartialState(cpu=hw.device == "cpu").local_process_index
    return {
        "device": hw.device, "gpu": hw.gpu, "precision": precision,
        "compute_dtype": str(DTYPES[precision]).removeprefix("torch."),
        "fp16": precision == "fp16", "bf16": precision == "bf16",  # mixed precision in the Trainer (AMP)
        "optim": optim, "optim_note": note,
        "device_map": {"": index if hw.device == "cuda" else "cpu"} if config.quantization != "none" else None,
    }


def sft_kwargs(config: FinetuneConfig, run_plan: dict, output_dir: str, progress: bool = True) -> dict:
    """Keyword arguments for trl.SFTConfig (TRL 1.x names; transformers' renamed fields handled)."""
    from trl import SFTConfig

    names = {f.name for f in dataclasses.fields(SFTConfig)}
    kw = dict(
        output_dir=output_dir, max_length=config.max_length, dataset_text_field="text", packing=False,
        per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, learning_rate=config.learning_rate,
        max_steps=config.max_steps, num_train_epochs=config.num_train_epochs, max_grad_norm=config.max_grad_norm,
        lr_scheduler_type=config.lr_scheduler_type, weight_decay=config.weight_decay, optim=run_plan["optim"],
        # set both, always: TRL turns bf16 on by itself, which a T4 and a CPU refuse
        fp16=run_plan["fp16"], bf16=run_plan["bf16"],
        logging_steps=config.logging_steps, logging_first_step=True, report_to="none",
        # checkpoints (adapter, optimizer, scheduler, RNG states) for resume_from_checkpoint; the newest kept
        save_strategy="steps" if config.save_steps else "no", save_steps=config.save_steps or 500,
        save_total_limit=config.save_total_limit,
        seed=config.seed, data_seed=config.seed, disable_tqdm=not progress, dataloader_num_workers=0,
        ddp_find_unused_parameters=False,  # every LoRA weight gets a gradient in every step
        use_cpu=run_plan["device"] == "cpu",  # also makes several CPU processes one gloo process group
    )
    # transformers 5 renamed three recipe settings; older versions take the old names
    kw["warmup_ratio" if "warmup_ratio" in names else "warmup_steps"] = config.warmup_ratio  # warmup_steps < 1 is a ratio
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    kw[ckpt] = config.gradient_checkpointing
    kw[ckpt + "_kwargs"] = {"use_reentrant": False} if config.gradient_checkpointing else None
    if "train_sampling_strategy" in names:
        kw["train_sampling_strategy"] = "group_by_length" if config.group_by_length else "random"
    else:
        kw["group_by_length"] = config.group_by_length
    return kw


def model_config_for(config: FinetuneConfig):
    """The transformers config of the model a fine-tune would load (Llama-2-7B's shape is known offline)."""
    if config.model == HUB_MODEL:
        return llama2_7b_config()
    from transformers import AutoConfig
    return AutoConfig.from_pretrained(str(config.model or EMBEDDED_MODEL))


def target_layers(config: FinetuneConfig, model_config=None) -> list[str]:
    """Full names of the layers config.target_modules selects, found on the model built on the meta device.

    No weights load: a target that matches nothing, a match that is not a linear layer, or a lora_r
    above a targeted layer's width fails here, in well under a second, naming the layer
    (lora_lab.lora.find_target_modules and check_rank, the rules inject_lora uses).
    """
    model = meta_model(model_config or model_config_for(config))
    names = find_target_modules(model, config.target_modules)
    check_rank(config.lora_r, [(n, *_features(model.get_submodule(n))) for n in names], key="lora_r")
    return names


def estimate_for(config: FinetuneConfig, run_plan: dict, seq_len: int | None = None, model_config=None):
    """memory.estimate_memory for this config and plan (Llama-2-7B's shape is known offline)."""
    return estimate_memory(
        model_config or model_config_for(config), quant=None if config.quantization == "none" else config.quantization,
        double_quant=config.double_quant,
        lora={"r": config.lora_r, "target_modules": config.target_modules, "lora_dropout": config.lora_dropout},
        batch_size=config.per_device_train_batch_size, seq_len=seq_len or config.max_length,
        optimizer=run_plan["optim"], gradient_checkpointing=config.gradient_checkpointing,
        compute_dtype=run_plan["compute_dtype"])
