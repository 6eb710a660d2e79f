"""What a fine-tune's settings become on a given machine: the hardware, the plan (precision, optimizer,
device map), TRL's SFTConfig arguments, the layers LoRA will wrap and the memory it will need.

Nothing here loads weights: a setting the machine cannot run, or a target that matches no layer, is
refused before the model loads.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from .config import ConfigError, FinetuneConfig
from .i18n import _
from .lora import _features, check_rank, find_target_modules
from .memory import estimate_memory, llama2_7b_config, llama2_70b_config, meta_model
from .models import HUB_MODEL, HUB_MODEL_70B
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
# a 24 GiB consumer card (RTX 3090 or 4090, both with bf16), as Answer.AI's FSDP-QLoRA used two of; the CUDA
# context takes a few hundred MiB of the 24 GiB, not counted here
GPU_24GB = Hardware("cuda", "24 GiB GPU (RTX 3090/4090)", True, 24.0)


def needs_gpu(config: FinetuneConfig) -> bool:
    """Llama-2-7B and 70B need a GPU; the same profiles pointed at a local small model do not."""
    return config.model in (HUB_MODEL, HUB_MODEL_70B)


def planning_hardware(config: FinetuneConfig) -> Hardware:
    """The GPU to plan for on a machine without one: 24 GiB cards for the 70B model, else a Colab T4."""
    return GPU_24GB if config.model == HUB_MODEL_70B else T4


def launched_processes() -> tuple[int, bool]:
    """(processes, FSDP?) as `accelerate launch` (or torchrun) started this one: 1 and False when run directly."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return world, os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def parallel_plan(config: FinetuneConfig, hardware: Hardware, compute_dtype: str,
                  launched: tuple[int, bool] | None = None) -> dict:
    """{sharding, num_processes, quant_storage} for this config: as it says (an estimate), or as checked against
    the launch (`launched`: (processes, FSDP?) of a real run). ConfigError for a sharding the launch or the
    machine cannot give, and for a 4-bit storage dtype FSDP cannot shard alongside the compute dtype."""
    sharding, n = config.sharding, config.num_processes
    if launched is not None:
        world, fsdp_launch = launched
        if n is not None and n != world:
            raise ConfigError(f"num_processes={n}, but this run was launched with {world} process(es): launch it with "
                              f"`accelerate launch --num_processes {n} ...`, or leave num_processes out")
        n = world
        if sharding == "auto":
            sharding = "fsdp" if fsdp_launch else "ddp" if world > 1 else "none"
        elif (sharding == "fsdp") != fsdp_launch:
            how = ("with an FSDP config: accelerate launch --config_file \"$(lora-lab fsdp-config)\" --num_processes N "
                   "-m lora_lab finetune ..." if sharding == "fsdp" else "without an FSDP config")
            raise ConfigError(f"sharding={sharding!r}, but this run was launched "
                              f"{'without' if sharding == 'fsdp' else 'with'} accelerate's FSDP; launch it {how}")
    n = n or 1
    if sharding == "auto":
        sharding = "none" if n == 1 else "ddp"
    from .memory import check_parallel

    try:
        check_parallel(sharding, n)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if sharding == "fsdp" and launched is not None and hardware.device == "cpu":
        raise ConfigError("sharding='fsdp' on a CPU: accelerate applies its FSDP plugin only to GPU (and other "
                          "accelerator) processes; on a CPU it would run plain data parallelism, each process holding "
                          "the whole model. Notebook 08 (lora_lab.fsdp_train) shards the kit's 4-bit layers with "
                          "PyTorch's FSDP2 on CPU processes; this command shards on GPUs.")
    storage = config.quant_storage
    if storage == "auto":
        storage = compute_dtype if sharding == "fsdp" else "uint8"
    elif sharding == "fsdp" and storage != compute_dtype:
        raise ConfigError(f"quant_storage={storage!r} with {compute_dtype} compute under FSDP: FSDP's mixed precision "
                          f"casts every floating-point parameter to the compute dtype, which would turn 4-bit codes "
                          f"stored as {storage} into other bytes; store them as the compute dtype "
                          f"(quant_storage={compute_dtype!r} or 'auto')")
    return {"sharding": sharding, "num_processes": n, "quant_storage": storage}


def plan(config: FinetuneConfig, hardware: Hardware | None = None,
         launched: tuple[int, bool] | None = None) -> dict:
    """What this machine makes of the config: precision, 4-bit compute dtype, optimizer, where the model goes.

    With several processes (or FSDP), also sharding, num_processes and quant_storage (parallel_plan; one
    process without them, as before). launched: (processes, FSDP?) of a real run (launched_processes()),
    checked against the config; None for a plan on paper (lora-lab estimate).
    """
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
        optim, note = "adamw_torch", _("optim={optim!r} needs a GPU: using 'adamw_torch' on this CPU").format(
            optim=config.optim)
    compute_dtype = str(DTYPES[precision]).removeprefix("torch.")
    parallel = parallel_plan(config, hw, compute_dtype, launched)
    from accelerate import PartialState
    index = PartialState(cpu=hw.device == "cpu").local_process_index
    return {
        "device": hw.device, "gpu": hw.gpu, "precision": precision, "compute_dtype": compute_dtype,
        "fp16": precision == "fp16", "bf16": precision == "bf16",  # mixed precision in the Trainer (AMP)
        "optim": optim, "optim_note": note,
        "device_map": {"": index if hw.device == "cuda" else "cpu"} if config.quantization != "none" else None,
        **(parallel if parallel["num_processes"] > 1 else {}),
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
    """The transformers config of the model a fine-tune would load (Llama-2-7B's and 70B's shapes are known offline)."""
    if config.model == HUB_MODEL:
        return llama2_7b_config()
    if config.model == HUB_MODEL_70B:
        return llama2_70b_config()
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
        compute_dtype=run_plan["compute_dtype"], num_processes=run_plan.get("num_processes", 1),
        sharding=run_plan.get("sharding", "none"))
