"""The production QLoRA fine-tune: a 4-bit NF4 base (bitsandbytes), LoRA adapters (PEFT) and TRL's
SFTTrainer, after Dettmers et al. 2023 (arXiv 2305.14314) and the classic Llama-2 Colab recipe.

One function, `finetune`, runs both profiles: `tiny` (the embedded model and data, minutes on a CPU)
and `llama2-7b-t4` (Llama-2-7b-chat on guanaco-llama2-1k, a free Colab T4). It handles on purpose the
traps that recipe's users hit; each is named where it is handled.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import (  # noqa: F401  (the settings' names, importable from here as before)
    PRECISIONS,
    PROFILES,
    QUANTIZATIONS,
    ConfigError,
    FinetuneConfig,
    config_keys,
    resolve_config,
)
from .data import load_instruction_dataset
from .evaluate import evaluate, generate_answers
from .hub import is_local, require_hub
from .memory import current_memory_mb, peak_memory_mb
from .models import bnb_4bit_config, describe_quantization, load_base_model, load_tokenizer
from .paths import EMBEDDED_DATASET
from .plan import (  # noqa: F401  (importable from here as before)
    DTYPES,
    T4,
    Hardware,
    NoGPUError,
    estimate_for,
    model_config_for,
    needs_gpu,
    plan,
    sft_kwargs,
    target_layers,
)
from .tasks import format_llama2, parse_llama2

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


def _check_wrapped(peft_model, targets: list[str]) -> None:
    # PEFT matched target_modules itself; it must have wrapped exactly the layers lora_lab's rules chose
    from peft.tuners.lora import LoraLayer

    wrapped = sorted(n.removeprefix("base_model.model.") for n, m in peft_model.named_modules() if isinstance(m, LoraLayer))
    if wrapped != sorted(targets):
        raise RuntimeError(f"PEFT wrapped {len(wrapped)} layers ({wrapped[:3]}...) but target_modules selects "
                           f"{len(targets)} ({sorted(targets)[:3]}...); the two matching rules disagree")


def finetune(config: FinetuneConfig | None = None, out: str | os.PathLike = "runs/finetune",
             hardware: Hardware | None = None, progress: bool = True, log=print) -> FinetuneResult:
    """Fine-tune with TRL's SFTTrainer + PEFT LoRA over a 4-bit base; write adapter/, loss_log.csv and metrics.json to `out`."""
    from accelerate import PartialState
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    if config is not None and not isinstance(config, FinetuneConfig):
        raise TypeError(f"config={config!r} is not accepted; pass a FinetuneConfig (from resolve_config) or None")
    config = (config or FinetuneConfig()).validate()  # again: a field may have been changed since it was built
    t_start = time.time()
    run_plan = plan(config, hardware)
    memory_at_start = current_memory_mb(run_plan["device"])  # libraries loaded, no model yet
    for source, kind in ((config.model, "model"), (config.dataset, "dataset")):  # fail before any download
        if source is not None and not is_local(source):
            require_hub(str(source), kind, "`lora-lab finetune --profile tiny` (the embedded model and data)")
    targets = target_layers(config)  # every target_modules entry must match, checked before any weight loads
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

    # target_modules as given: a list stays a list, "all-linear" and a regex stay one string (never split)
    peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                             target_modules=config.target_modules, bias="none", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, processing_class=tokenizer,
                         peft_config=peft_config)
    _check_wrapped(trainer.model, targets)
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
