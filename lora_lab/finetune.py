"""The production QLoRA fine-tune: a 4-bit NF4 base (bitsandbytes), LoRA adapters (PEFT) and TRL's
SFTTrainer, after Dettmers et al. 2023 (arXiv 2305.14314) and the classic Llama-2 Colab recipe.

One function, `finetune`, runs both profiles: `tiny` (the embedded model and data, minutes on a CPU)
and `llama2-7b-t4` (Llama-2-7b-chat on guanaco-llama2-1k, a free Colab T4). It handles on purpose the
traps that recipe's users hit; each is named where it is handled.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import runs
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
from .hub import is_local, require_hub
from .i18n import N_, _, format_number, translate
from .memory import current_memory_mb, peak_memory_mb
from .models import bnb_4bit_config, describe_quantization, load_base_model, load_tokenizer
from .plan import (  # noqa: F401  (importable from here as before)
    DTYPES,
    T4,
    Hardware,
    NoGPUError,
    estimate_for,
    launched_processes,
    model_config_for,
    needs_gpu,
    plan,
    sft_kwargs,
    target_layers,
)
from .runs import RunFolderError, read_loss_log  # noqa: F401  (importable from here as before)
from .sft_data import (  # noqa: F401  (importable from here)
    describe_fit,
    eval_rows_for,
    fit_to_max_length,
    measure,
    prepare_tokenizer,
    sft_dataset,
)

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
        quantization = bnb_4bit_config(config.quantization, config.double_quant, compute_dtype=dtype,
                                       quant_storage=run_plan.get("quant_storage", "uint8"))
    tokenizer = load_tokenizer(config.model)
    model = load_base_model(config.model, quantization=quantization, dtype=dtype, device_map=run_plan["device_map"])
    prepare_tokenizer(tokenizer, model)  # (load_base_model already stopped bitsandbytes' CPU repacking)
    model.config.use_cache = False  # the KV cache is for generation; in training it only costs memory
    if config.gradient_checkpointing:
        # checkpointed layers of a frozen base get no input that requires grad, so backward would find
        # nothing to differentiate ("element 0 of tensors does not require grad", peft#1577)
        model.enable_input_require_grads()
    return model, tokenizer


def load_trained(out: str | os.PathLike, loader: str = "peft", hardware: Hardware | None = None):
    """(model, tokenizer) rebuilt from a run's folder: its base, loaded as in training, plus adapter/.

    loader="peft" uses peft.PeftModel.from_pretrained; "lora_lab" uses lora_lab.load_adapter.
    """
    out = Path(out)
    record = runs.read_record(out)
    if record is None:
        raise FileNotFoundError(f"out={str(out)!r} holds no fine-tune (no run.json or metrics.json)")
    if record.get("status") != "finished":
        raise ValueError(f"out={str(out)!r} holds a fine-tune that did not finish: its adapter may be missing or "
                         "older than its checkpoints. Finish it with `lora-lab finetune --out ... --resume`")
    saved = dict(record["config"])
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


def _checkpoint_timer():
    """A TrainerCallback adding up the seconds spent writing checkpoints, and the dict it adds them to."""
    from transformers import TrainerCallback

    spent = {"seconds": 0.0, "count": 0, "t0": None}

    class CheckpointTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # after DefaultFlowCallback decided to save
            spent["t0"] = time.perf_counter() if control.should_save else None

        def on_save(self, args, state, control, **kw):  # the checkpoint is written
            if spent["t0"] is not None:
                spent["seconds"] += time.perf_counter() - spent["t0"]
                spent["count"] += 1

    return CheckpointTimer(), spent


def finetune(config: FinetuneConfig | None = None, out: str | os.PathLike = "runs/finetune",
             hardware: Hardware | None = None, progress: bool = True, log=print, overwrite: bool = False,
             resume: bool = False) -> FinetuneResult:
    """Fine-tune with TRL's SFTTrainer + PEFT LoRA over a 4-bit base; write adapter/, loss_log.csv and metrics.json to `out`.

    A folder holding a run is never overwritten unless overwrite=True. resume=True continues an
    unfinished run in `out` from its last checkpoint (every config.save_steps steps, under
    out/checkpoints) through transformers' own resume_from_checkpoint: adapter, optimizer, scheduler
    and RNG states restored; config=None then reads the run's own settings. out/run.json says whether
    the run finished; lora_lab.runs describes the folder. Raises ConfigError for a bad setting,
    RunFolderError (a FileExistsError) for a folder it may not write, before any model loads.
    """
    from accelerate import PartialState
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from .progress import use_notebook_progress

    out = Path(out)
    if config is None and resume and (record := runs.read_record(out)) and record.get("config"):
        saved = dict(record["config"])
        config = resolve_config(saved.pop("profile"), saved)
    if config is not None and not isinstance(config, FinetuneConfig):
        raise TypeError(f"config={config!r} is not accepted; pass a FinetuneConfig (from resolve_config) or None")
    config = (config or FinetuneConfig()).validate()  # again: a field may have been changed since it was built
    settings = json.loads(json.dumps(dataclasses.asdict(config), default=str))  # as run.json stores them
    start = runs.check_out(out, settings, overwrite=overwrite, resume=resume)  # reads only; all processes agree
    t_start = time.time()
    run_plan = plan(config, hardware, launched=launched_processes())  # how many processes, sharded how
    memory_at_start = current_memory_mb(run_plan["device"])  # libraries loaded, no model yet
    for source, kind in ((config.model, "model"), (config.dataset, "dataset")):  # fail before any download
        if source is not None and not is_local(source):
            require_hub(str(source), kind, "`lora-lab finetune --profile tiny` (the embedded model and data)")
    targets = target_layers(config)  # every target_modules entry must match, checked before any weight loads
    # the data, read and tokenized before any model loads: a bad file, or a max_length no prompt fits in, stops here
    texts = list(load_instruction_dataset(config.dataset)["text"])
    train_rows, fit = fit_to_max_length(load_tokenizer(config.model), texts, config.max_length,
                                        config.completion_only_loss)
    eval_rows = eval_rows_for(config)
    if run_plan.get("sharding") == "fsdp":
        estimate_for(config, run_plan)  # on the meta model: the process count must divide every 4-bit layer's blocks
    # SFTConfig sets up the processes (one, or one per `accelerate launch`/torchrun worker): build it first
    args = SFTConfig(**sft_kwargs(config, run_plan, str(out / runs.CHECKPOINTS), progress))
    state = PartialState()
    main = state.is_main_process
    say = log if main else (lambda *a, **k: None)
    state.wait_for_everyone()  # every process has read the folder before the main one writes to it
    record = start.record or {"config": settings, "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    record = {k: v for k, v in record.items() if k not in ("error", "stopped")} | {"status": "running"}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if start.fresh:
            if start.note:
                say(start.note)
            runs.clear(out)
        else:
            dropped = runs.drop_incomplete(out)
            say(_("resuming {out} from {checkpoint}").format(out=out, checkpoint=start.checkpoint.name)
                + (_(" (removed {names}, cut off mid-write)").format(names=", ".join(dropped)) if dropped else ""))
        runs.write_record(out, record)
    state.wait_for_everyone()
    say(_("lora-lab finetune: profile {profile!r} on {device}, {precision} compute, optimizer {optim}").format(
        profile=config.profile, device=run_plan["gpu"] or "CPU", precision=run_plan["precision"],
        optim=run_plan["optim"]))
    if run_plan["optim_note"]:
        say(run_plan["optim_note"])

    if note := describe_fit(fit, config.max_length):
        say(note)
    try:
        model, tokenizer = load_for_training(config, run_plan)
        quant = describe_quantization(model)
        say(_("4-bit layers as loaded: {layers}").format(layers=quant))
        longest = max(len(r) for r in train_rows["input_ids"])  # a batch is padded to its longest row
        estimate = estimate_for(config, run_plan, seq_len=longest, model_config=model.config)
        say(_("memory estimate (per process):") + "\n" + estimate.table("MiB"))

        before = record.get("eval_before")  # measured once, by the first attempt
        if before is None and main:
            before = measure(model, tokenizer, config, eval_rows)
            runs.write_record(out, {**record, "eval_before": before})
        state.wait_for_everyone()

        # target_modules as given: a list stays a list, "all-linear" and a regex stay one string (never split)
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=config.target_modules, bias="none", task_type="CAUSAL_LM")
        timer, spent = _checkpoint_timer()
        trainer = SFTTrainer(model=model, args=args, train_dataset=train_rows, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=[timer])
        _check_wrapped(trainer.model, targets)
        use_notebook_progress(trainer)  # transformers' notebook progress table, in the kit's language
        _keep_adapters_fp32(trainer.model)
        trainable, total = trainer.model.get_nb_trainable_parameters()
        say(_("trainable params: {trainable:,} || all params: {total:,} || trainable%: {share:.4f}").format(
            trainable=trainable, total=total, share=100 * trainable / total))

        t0 = time.time()
        if start.checkpoint and runs.trained_out(start.checkpoint):
            # training had finished and only the save after it was cut off; Trainer.train would run one more
            # step from such a checkpoint, so load it as the Trainer itself loads one, and do not train
            from transformers import TrainerState

            trainer.model.load_adapter(str(start.checkpoint), trainer.model.active_adapter, is_trainable=True)
            trainer.state = TrainerState.load_from_json(str(start.checkpoint / "trainer_state.json"))
        else:
            trainer.train(resume_from_checkpoint=str(start.checkpoint) if start.checkpoint else None)
        train_seconds = time.time() - t0
        peft_model = trainer.model
        peft_model.eval()
        peft_model.config.use_cache = True
        partial = out / ".adapter.partial"  # written whole, then renamed to adapter/
        if main and partial.exists():
            shutil.rmtree(partial)
        trainer.save_model(str(partial))  # adapter_config.json + adapter_model.safetensors, main process only
        after = measure(peft_model, tokenizer, config, eval_rows) if main else None

        losses = [h for h in trainer.state.log_history if "loss" in h]
        peaks = _per_process(round(peak_memory_mb(run_plan["device"]), 1), state)
        metrics = {}
        if main:
            score = (lambda m: m["accuracy"]) if eval_rows is not None else (lambda m: m["samples"])
            metrics = {
                "metric": HELD_OUT_METRIC if eval_rows is not None else SAMPLES_METRIC,
                "metric_before": score(before), "metric_after": score(after),
                "eval_before": before, "eval_after": after,
                "train_seconds": round(train_seconds, 2), "total_seconds": round(time.time() - t_start, 2),
                "resumed_from_step": int(start.checkpoint.name.split("-")[-1]) if start.checkpoint else None,
                "checkpoints_saved": spent["count"], "checkpoint_seconds": round(spent["seconds"], 3),
                "peak_memory_mb": peaks[0],
                "peak_memory_mb_per_process": peaks,  # one per process, in rank order (under FSDP, each its own share)
                "sharding": run_plan.get("sharding", "none"),
                "peak_memory_kind": "GPU memory allocated" if run_plan["device"] == "cuda" else "process RSS",
                "memory_at_start_mb": round(memory_at_start, 1),
                "train_rows": {"kept": len(train_rows), "dropped": fit["dropped"], "cut": fit["cut"]},
                "steps": trainer.state.global_step, "final_loss": losses[-1]["loss"] if losses else None,
                "num_processes": state.num_processes, "trainable_params": trainable, "all_params": total,
                "quantization": quant, "plan": run_plan, "memory_estimate_mb": {
                    k: round(v / 2**20, 2) for k, v in estimate.as_dict().items()
                    if k in estimate.PARTS + ("parallel_buffers", "total")},
                "config": dataclasses.asdict(config),
            }
            # each file whole or not at all; run.json says "finished" only once all of them are in place
            runs.replace_dir(partial, out / "adapter")
            runs.write_loss_log(out / "loss_log.csv", trainer.state.log_history)
            runs.write_atomic(out / "metrics.json", json.dumps(metrics, indent=2, default=str) + "\n")
            runs.write_record(out, {**runs.read_record(out), "status": "finished",
                                    "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
            say(_("{metric}: {before} -> {after} in {seconds:.0f} s of training; wrote {out}/adapter, loss_log.csv, "
                  "metrics.json").format(metric=metric_label(metrics["metric"]), before=_show(metrics["metric_before"]),
                                         after=_show(metrics["metric_after"]), seconds=train_seconds, out=out))
        state.wait_for_everyone()
        return FinetuneResult(metrics, peft_model, tokenizer, trainer)
    except BaseException as err:  # a failure or Ctrl-C: run.json says so, and how to go on
        if main:
            _record_stop(out, err, say)
        raise


def _record_stop(out: Path, err: BaseException, say) -> None:
    """Mark run.json "interrupted" (Ctrl-C) or "failed", with the error, and print how to continue."""
    interrupted = isinstance(err, KeyboardInterrupt)
    record = runs.read_record(out) or {}
    runs.write_record(out, {**record, "status": "interrupted" if interrupted else "failed",
                            "error": None if interrupted else f"{type(err).__name__}: {err}",
                            "stopped": time.strftime("%Y-%m-%d %H:%M:%S")})
    done = runs.checkpoints(out)
    how = (_("continue from step {step} with: lora-lab finetune --out {out} --resume").format(step=done[-1][0], out=out)
           if done else _("no checkpoint was saved yet, so the same command starts it again"))
    stopped = (_("lora-lab: the run in {out} was interrupted and is recorded so in {file}; {how}") if interrupted else
               _("lora-lab: the run in {out} failed and is recorded so in {file}; {how}"))
    say(stopped.format(out=out, file=runs.RUN_FILE, how=how))


def _per_process(value, state) -> list:
    """`value` from every process, in rank order (only this one's when there is one process)."""
    if state.num_processes == 1:
        return [value]
    import torch.distributed as dist

    values = [None] * state.num_processes
    dist.all_gather_object(values, value)
    return values


# metrics.json's "metric": what the fine-tune measured, before and after (the file keeps these English names)
HELD_OUT_METRIC, SAMPLES_METRIC = N_("held-out exact match"), N_("sample generations")


def metric_label(metric: str) -> str:
    """metrics.json's "metric" ("held-out exact match", "sample generations") in the kit's language."""
    return translate(metric) if metric in (HELD_OUT_METRIC, SAMPLES_METRIC) else metric


def _show(metric) -> str:
    return format_number(metric, ".1%") if isinstance(metric, float) else _("{n} sample replies").format(n=len(metric))
