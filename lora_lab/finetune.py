"""The production QLoRA fine-tune: a 4-bit NF4 base (bitsandbytes), LoRA adapters (PEFT) and TRL's
SFTTrainer, after Dettmers et al. 2023 (arXiv 2305.14314) and the classic Llama-2 Colab recipe.

One function, `finetune`, runs both profiles: `tiny` (the embedded model and data, minutes on a CPU)
and `llama2-7b-t4` (Llama-2-7b-chat on guanaco-llama2-1k, a free Colab T4). It handles on purpose the
traps that recipe's users hit; each is named where it is handled.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .data import HUB_DATASET, load_instruction_dataset
from .evaluate import evaluate, generate_answers
from .hub import is_local, require_hub
from .memory import (
    LLAMA_PROJECTIONS,
    current_memory_mb,
    estimate_memory,
    llama2_7b_config,
    peak_memory_mb,
)
from .models import (
    HUB_MODEL,
    bnb_4bit_config,
    describe_quantization,
    load_base_model,
    load_tokenizer,
)
from .paths import EMBEDDED_DATASET, EMBEDDED_MODEL
from .tasks import format_llama2, parse_llama2

QUANTIZATIONS = ("nf4", "fp4", "none")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class FinetuneConfig:
    profile: str = "tiny"               # which PROFILES entry these values started from
    model: str | None = None            # None: the embedded tiny Llama; else a hub id or a local folder
    dataset: str | None = None          # None: the embedded instructions; else a hub id, folder or .jsonl file
    # 4-bit base (bitsandbytes' names in BitsAndBytesConfig: bnb_4bit_quant_type, bnb_4bit_use_double_quant)
    quantization: str = "nf4"           # "nf4" (QLoRA), "fp4", or "none" (LoRA over a 16/32-bit base)
    double_quant: bool = True           # 8-bit block scales: 4.127 instead of 4.5 bits per weight
    precision: str = "auto"             # compute dtype; auto: fp32 on a CPU, bf16 where the GPU has it, else fp16
    # LoRA (PEFT's names)
    lora_r: int = 16                    # rank of each update B·A
    lora_alpha: float = 32              # updates scaled by lora_alpha / lora_r
    lora_dropout: float = 0.0           # dropout on the adapter's input
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_PROJECTIONS))  # all seven, as QLoRA does
    # training (transformers' TrainingArguments names)
    learning_rate: float = 2e-3         # LoRA on a tiny model takes a large one
    max_steps: int = 300                # optimizer steps; -1: num_train_epochs decides
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0          # gradient clipping
    warmup_ratio: float = 0.05          # share of the steps spent warming the learning rate up
    lr_scheduler_type: str = "cosine"   # after the warmup, decay to zero
    weight_decay: float = 0.0
    optim: str = "auto"                 # auto: paged_adamw_32bit on a GPU, adamw_torch on a CPU
    max_length: int = 128               # tokens per row; longer rows are cut
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    group_by_length: bool = False       # batch rows of similar length: less padding
    completion_only_loss: bool = True   # loss on the answer tokens only (QLoRA trains on targets only)
    logging_steps: int = 10
    seed: int = 0
    # measuring before and after
    max_new_tokens: int = 8             # per generated answer
    sample_prompts: list[str] = field(default_factory=lambda: ["How do I use the OpenAI API?"])  # scored by eye where no held-out split exists

    def __post_init__(self):
        for name, choices in (("quantization", QUANTIZATIONS), ("precision", PRECISIONS), ("profile", tuple(PROFILES))):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {choices}")
        for name in ("lora_r", "per_device_train_batch_size", "gradient_accumulation_steps", "max_length",
                     "logging_steps", "max_new_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive integer")
        if not 0 <= self.lora_dropout < 1 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("lora_dropout and warmup_ratio must be in [0, 1)")
        if self.learning_rate <= 0 or self.lora_alpha <= 0:
            raise ValueError("learning_rate and lora_alpha must be > 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError(f"max_steps={self.max_steps} must be a positive number of steps, or -1 (use epochs)")


PROFILES: dict[str, dict] = {
    "tiny": {},  # the dataclass defaults
    # The classic Colab recipe (Llama-2-7b-chat on guanaco-llama2-1k, one epoch of 250 steps on a T4),
    # with QLoRA's own settings where the recipe fell short: NF4 with double quantization, all seven projections.
    "llama2-7b-t4": dict(
        model=HUB_MODEL, dataset=HUB_DATASET, quantization="nf4", double_quant=True,
        lora_r=64, lora_alpha=16, lora_dropout=0.1, learning_rate=2e-4, max_steps=-1, num_train_epochs=1.0,
        per_device_train_batch_size=4, max_grad_norm=0.3, warmup_ratio=0.03, weight_decay=0.001,
        lr_scheduler_type="constant_with_warmup",  # the recipe's "constant" silently skips its own warmup
        max_length=1024, gradient_checkpointing=True, group_by_length=True, logging_steps=25, max_new_tokens=200,
    ),
}


class NoGPUError(RuntimeError):
    """A profile that needs a GPU was started on a machine without one."""


def config_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(FinetuneConfig)]


def resolve_config(profile: str = "tiny", overrides: dict | None = None, **kwargs) -> FinetuneConfig:
    """A profile's settings with `overrides` on top; an unknown key is an error, never ignored."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not one of {tuple(PROFILES)}")
    overrides = {**(overrides or {}), **kwargs}
    keys = config_keys()
    for key in overrides:
        if key not in keys:
            near = difflib.get_close_matches(key, keys, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ValueError(f"unknown config key {key!r}{hint} Known keys: {', '.join(keys)}")
    return FinetuneConfig(**{**PROFILES[profile], **overrides, "profile": profile})


# ----------------------------------------------------------------------------- hardware and plan


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
        logging_steps=config.logging_steps, logging_first_step=True, save_strategy="no", report_to="none",
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


def estimate_for(config: FinetuneConfig, run_plan: dict, seq_len: int | None = None, model_config=None):
    """memory.estimate_memory for this config and plan (Llama-2-7B's shape is known offline)."""
    if model_config is None:
        if config.model == HUB_MODEL:
            model_config = llama2_7b_config()
        else:
            from transformers import AutoConfig
            model_config = AutoConfig.from_pretrained(str(config.model or EMBEDDED_MODEL))
    return estimate_memory(
        model_config, quant=None if config.quantization == "none" else config.quantization,
        double_quant=config.double_quant,
        lora={"r": config.lora_r, "target_modules": config.target_modules, "lora_dropout": config.lora_dropout},
        batch_size=config.per_device_train_batch_size, seq_len=seq_len or config.max_length,
        optimizer=run_plan["optim"], gradient_checkpointing=config.gradient_checkpointing,
        compute_dtype=run_plan["compute_dtype"])


# ----------------------------------------------------------------------------- tokenizer and data


def prepare_tokenizer(tokenizer, model=None):
    """Right padding, and a pad token that is not the EOS token (the model must learn to stop)."""
    # pad = eos (the classic recipe) hides every EOS wherever padding is masked by token id, so the
    # model never learns to end its answer (trl#1623). Llama-2 has an <unk> token to pad with.
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        if tokenizer.unk_token is None or tokenizer.unk_token_id == tokenizer.eos_token_id:
            raise ValueError("the tokenizer has no pad token distinct from EOS, and no <unk> to pad with")
        tokenizer.pad_token = tokenizer.unk_token
    tokenizer.padding_side = "right"  # left padding in training gave zero loss on Llama-2 (trl#550)
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return tokenizer


def sft_dataset(tokenizer, texts: list[str], max_length: int, completion_only_loss: bool = True):
    """Rows tokenized as lora_lab.evaluate tokenizes prompts, with labels; SFTTrainer trains on them as they are.

    Every row already starts with `<s>`. TRL tokenizes a `text` row with the tokenizer's defaults,
    which add a second `<s>` (a double BOS the model never sees at inference), so the kit tokenizes
    with add_special_tokens=False itself; a dataset with `input_ids` is used by SFTTrainer unchanged.
    """
    from datasets import Dataset

    ids, labels = [], []
    for text in texts:
        row = tokenizer(text, add_special_tokens=False).input_ids[:max_length]
        label = list(row)
        if completion_only_loss:
            head = tokenizer(format_llama2(parse_llama2(text)[0]), add_special_tokens=False).input_ids
            n = 0  # the prompt's tokens: where the row and the prompt alone agree
            while n < min(len(head), len(row)) and head[n] == row[n]:
                n += 1
            label[:n] = [-100] * n
        ids.append(row)
        labels.append(label)
    return Dataset.from_dict({"text": list(texts), "input_ids": ids, "labels": labels})


def _eval_rows(config: FinetuneConfig):
    """The held-out split, where the dataset has one (the embedded data, or a local folder with eval.jsonl)."""
    source = EMBEDDED_DATASET if config.dataset is None else Path(config.dataset).expanduser()
    if is_local(source) and (Path(source) / "eval.jsonl").exists():
        return load_instruction_dataset(source, split="eval")
    return None


def measure(model, tokenizer, config: FinetuneConfig, eval_rows=None) -> dict:
    """Held-out exact match where a held-out split exists; else the replies to `sample_prompts`."""
    cache, model.config.use_cache = model.config.use_cache, True  # generation wants its KV cache back
    try:
        if eval_rows is not None:
            return evaluate(model, tokenizer, eval_rows, max_new_tokens=config.max_new_tokens)
        replies = generate_answers(model, tokenizer, config.sample_prompts, max_new_tokens=config.max_new_tokens,
                                   batch_size=4)
        return {"samples": [{"prompt": p, "reply": r} for p, r in zip(config.sample_prompts, replies)]}
    finally:
        model.config.use_cache = cache


# ----------------------------------------------------------------------------- the run


@dataclass
class FinetuneResult:
    metrics: dict            # what metrics.json holds
    model: object            # the PeftModel, in eval mode
    tokenizer: object
    trainer: object


def load_for_training(config: FinetuneConfig, run_plan: dict):
    """(model, tokenizer) with every setting the fine-tune needs, the 4-bit one read back from the layers."""
    quantization = None
    dtype = DTYPES[run_plan["precision"]]
    if config.quantization != "none":
        # every 4-bit setting explicit: BitsAndBytesConfig's defaults are fp4, no double quant, fp32 compute
        quantization = bnb_4bit_config(config.quantization, config.double_quant, compute_dtype=dtype)
    tokenizer = load_tokenizer(config.model)
    model = load_base_model(config.model, quantization=quantization, dtype=dtype, device_map=run_plan["device_map"])
    keep_4bit_weights_as_trained(model)
    prepare_tokenizer(tokenizer, model)
    model.config.use_cache = False  # the KV cache is for generation; in training it only costs memory
    if config.gradient_checkpointing:
        # checkpointed layers of a frozen base get no input that requires grad, so backward would find
        # nothing to differentiate ("element 0 of tensors does not require grad", peft#1577)
        model.enable_input_require_grads()
    return model, tokenizer


def keep_4bit_weights_as_trained(model):
    """Stop bitsandbytes repacking 4-bit weights for CPU inference, so evaluation and training use the same weights.

    bitsandbytes 0.50, on a CPU with AVX512-BF16, repacks a Linear4bit's weight the first time it runs
    in eval mode without gradients: scales cast to bf16, double quantization undone. Every later
    forward goes through a kernel with no backward (gemv_4bit), so a model evaluated before training
    would train with no gradient through its base layers, and score differently on other CPUs.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False
    return model


def load_trained(out: str | os.PathLike, loader: str = "peft", hardware: Hardware | None = None):
    """(model, tokenizer) rebuilt from a run's folder: its base, loaded as in training, plus adapter/.

    loader="peft" uses peft.PeftModel.from_pretrained; "lora_lab" uses lora_lab.load_adapter.
    """
    out = Path(out)
    saved = json.loads((out / "metrics.json").read_text())["config"]
    config = resolve_config(saved.pop("profile"), saved)
    model, tokenizer = load_for_training(config, plan(config, hardware))
    model.config.use_cache = True
    if loader == "peft":
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, str(out / "adapter"))
    elif loader == "lora_lab":
        from .adapters import load_adapter
        model = load_adapter(model, out / "adapter")
    else:
        raise ValueError(f"loader={loader!r} is not 'peft' or 'lora_lab'")
    return model.eval(), tokenizer


def _keep_adapters_fp32(model) -> None:
    # TRL 1.16 casts a 4-bit model's LoRA weights to bf16, which a T4 lacks; fp16 ones fail in the
    # AMP grad scaler ("Attempting to unscale FP16 gradients"). Train them in fp32, as PEFT makes them.
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()


def finetune(config: FinetuneConfig | None = None, out: str | os.PathLike = "runs/finetune",
             hardware: Hardware | None = None, progress: bool = True, log=print) -> FinetuneResult:
    """Fine-tune with TRL's SFTTrainer + PEFT LoRA over a 4-bit base; write adapter/, loss_log.csv and metrics.json to `out`."""
    from accelerate import PartialState
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    config = config or FinetuneConfig()
    t_start = time.time()
    run_plan = plan(config, hardware)
    memory_at_start = current_memory_mb(run_plan["device"])  # libraries loaded, no model yet
    for source, kind in ((config.model, "model"), (config.dataset, "dataset")):  # fail before any download
        if source is not None and not is_local(source):
            require_hub(str(source), kind, "`lora-lab finetune --profile tiny` (the embedded model and data)")
    # SFTConfig sets up the processes (one, or one per `accelerate launch`/torchrun worker): build it first
    args = SFTConfig(**sft_kwargs(config, run_plan, str(Path(out) / "trainer"), progress))
    state = PartialState()
    main = state.is_main_process
    say = log if main else (lambda *a, **k: None)
    out = Path(out)
    say(f"lora-lab finetune: profile {config.profile!r} on {run_plan['gpu'] or 'CPU'}, "
        f"{run_plan['precision']} compute, optimizer {run_plan['optim']}")
    if run_plan["optim_note"]:
        say(run_plan["optim_note"])

    model, tokenizer = load_for_training(config, run_plan)
    quant = describe_quantization(model)
    say(f"4-bit layers as loaded: {quant}")
    texts = list(load_instruction_dataset(config.dataset)["text"])
    train_rows = sft_dataset(tokenizer, texts, config.max_length, config.completion_only_loss)
    eval_rows = _eval_rows(config)
    longest = max(len(r) for r in train_rows["input_ids"])  # a batch is padded to its longest row
    estimate = estimate_for(config, run_plan, seq_len=longest, model_config=model.config)
    say("memory estimate (per process):\n" + estimate.table("MiB"))

    before = measure(model, tokenizer, config, eval_rows) if main else None
    state.wait_for_everyone()

    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, processing_class=tokenizer,
                         peft_config=peft_config)
    _keep_adapters_fp32(trainer.model)
    trainable, total = trainer.model.get_nb_trainable_parameters()
    say(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")

    t0 = time.time()
    trainer.train()
    train_seconds = time.time() - t0
    peft_model = trainer.model
    peft_model.eval()
    peft_model.config.use_cache = True
    trainer.save_model(str(out / "adapter"))  # adapter_config.json + adapter_model.safetensors, main process only
    after = measure(peft_model, tokenizer, config, eval_rows) if main else None

    losses = [h for h in trainer.state.log_history if "loss" in h]
    metrics = {}
    if main:
        score = (lambda m: m["accuracy"]) if eval_rows is not None else (lambda m: m["samples"])
        metrics = {
            "metric": "held-out exact match" if eval_rows is not None else "sample generations",
            "metric_before": score(before), "metric_after": score(after),
            "eval_before": before, "eval_after": after,
            "train_seconds": round(train_seconds, 2), "total_seconds": round(time.time() - t_start, 2),
            "peak_memory_mb": round(peak_memory_mb(run_plan["device"]), 1),
            "peak_memory_kind": "GPU memory allocated" if run_plan["device"] == "cuda" else "process RSS",
            "memory_at_start_mb": round(memory_at_start, 1),
            "steps": trainer.state.global_step, "final_loss": losses[-1]["loss"] if losses else None,
            "num_processes": state.num_processes, "trainable_params": trainable, "all_params": total,
            "quantization": quant, "plan": run_plan, "memory_estimate_mb": {
                k: round(v / 2**20, 2) for k, v in estimate.as_dict().items() if k in estimate.PARTS + ("total",)},
            "config": dataclasses.asdict(config),
        }
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "loss_log.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["step", "loss", "learning_rate", "grad_norm"])
            for h in losses:
                writer.writerow([h["step"], h["loss"], h.get("learning_rate"), h.get("grad_norm")])
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str) + "\n")
        say(f"{metrics['metric']}: {_show(metrics['metric_before'])} -> {_show(metrics['metric_after'])} "
            f"in {train_seconds:.0f} s of training; wrote {out}/adapter, loss_log.csv, metrics.json")
    state.wait_for_everyone()
    return FinetuneResult(metrics, peft_model, tokenizer, trainer)


def _show(metric) -> str:
    return f"{metric:.1%}" if isinstance(metric, float) else f"{len(metric)} sample replies"


def read_loss_log(out: str | os.PathLike) -> list[dict]:
    """The loss log a run wrote: one dict (step, loss, learning_rate, grad_norm) per logged step."""
    with open(Path(out) / "loss_log.csv") as f:
        return [{k: (float(v) if v not in ("", "None") else None) for k, v in row.items()} for row in csv.DictReader(f)]
