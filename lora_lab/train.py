"""A plain PyTorch training loop for instruction tuning: tokenize, batch, loss on the answer, step.

No Trainer, no callbacks: every line of what a fine-tune does is here to read. The production
path (TRL's SFTTrainer) is in lora_lab/finetune.py; both train on the same rows.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from .tasks import format_llama2, parse_llama2

IGNORE_INDEX = -100  # label value that cross-entropy skips


def tokenize_rows(tokenizer, texts: list[str], max_length: int = 128, answer_only: bool = True) -> list[dict]:
    """Token ids and labels per row; with `answer_only`, the prompt's labels are IGNORE_INDEX.

    Rows already start with `<s>`, so the tokenizer must not add another one (a double BOS). A row
    that max_length leaves without a target token (its loss would be 0/0, nan) is dropped with a
    warning that counts them; ValueError if no row keeps one.
    """
    rows, dropped = [], 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False).input_ids[:max_length]
        labels = list(ids)
        if answer_only:
            prompt, _ = parse_llama2(text)
            head = tokenizer(format_llama2(prompt), add_special_tokens=False).input_ids
            if ids[:len(head)] != head[:len(ids)]:  # the prompt must tokenize the same on its own
                raise ValueError(f"row {text[:60]!r}: prompt tokens differ inside the full row")
            labels[:len(head)] = [IGNORE_INDEX] * min(len(head), len(labels))
        if all(label == IGNORE_INDEX for label in labels[1:]):  # the first token is never predicted
            dropped += 1
            continue
        rows.append({"input_ids": ids, "labels": labels})
    if not rows:
        raise ValueError(f"max_length={max_length} leaves no answer token in any of the {len(texts)} rows: each prompt "
                         "alone fills it. Raise max_length")
    if dropped:
        warnings.warn(f"max_length={max_length} leaves no answer token in {dropped} of {len(texts)} rows; they are "
                      "dropped", stacklevel=2)
    return rows


def collate(rows: list[dict], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: padding is masked from attention and from the loss."""
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id)                # (B, T)
    labels = torch.full((len(rows), width), IGNORE_INDEX)             # (B, T)
    mask = torch.zeros((len(rows), width), dtype=torch.long)          # (B, T)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@dataclass
class TrainConfig:
    steps: int = 300            # optimizer steps
    batch_size: int = 32        # rows per step
    lr: float = 3e-3            # peak learning rate (LoRA on a tiny model takes a large one)
    warmup_ratio: float = 0.05  # linear warmup, then constant
    max_grad_norm: float = 1.0  # gradient clipping
    weight_decay: float = 0.0
    max_length: int = 128       # tokens per row
    seed: int = 0
    log_every: int = 10


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # one per step
    seconds: float = 0.0


def train(model, tokenizer, texts: list[str], config: TrainConfig | None = None, progress: bool = False) -> TrainResult:
    """Train the model's trainable parameters (e.g. LoRA A and B) on instruction rows; return the loss per step."""
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("model has no trainable parameters: inject LoRA (or unfreeze something) first")
    data = tokenize_rows(tokenizer, texts, config.max_length)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    warmup = max(1, math.ceil(config.warmup_ratio * config.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup))
    g = torch.Generator().manual_seed(config.seed)
    device = next(model.parameters()).device
    order, pos = torch.randperm(len(data), generator=g), 0

    result, t0 = TrainResult(), time.time()
    steps = range(config.steps)
    if progress:
        from tqdm.auto import tqdm
        steps = tqdm(steps, desc="training")
    model.train()
    for step in steps:
        if pos + config.batch_size > len(data):  # a new epoch, a new order
            order, pos = torch.randperm(len(data), generator=g), 0
        batch = collate([data[i] for i in order[pos:pos + config.batch_size]], tokenizer.pad_token_id)
        pos += config.batch_size
        loss = model(**{k: v.to(device) for k, v in batch.items()}).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        opt.step()
        sched.step()
        result.losses.append(loss.item())
        if progress and step % config.log_every == 0:
            steps.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    result.seconds = time.time() - t0
    return result
