"""Score a model on held-out instructions: greedy answers, compared by exact match."""

from __future__ import annotations

from collections import defaultdict

import torch

from .tasks import format_llama2, parse_llama2, score_answer, task_of


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 8, batch_size: int = 64,
                     temperature: float = 0.0, seed: int = 0) -> list[str]:
    """The model's reply to each prompt in Llama-2 chat format; greedy unless `temperature` > 0."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # batched generation: prompts end at the same column
    torch.manual_seed(seed)
    replies = []
    try:
        for i in range(0, len(prompts), batch_size):
            texts = [format_llama2(p) for p in prompts[i:i + batch_size]]
            # the text already starts with <s>: don't let the tokenizer add a second one
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            out = model.generate(
                **enc, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                temperature=temperature if temperature > 0 else None, top_p=None, top_k=None,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            new = out[:, enc["input_ids"].shape[1]:]  # (B, new tokens)
            replies += [s.strip() for s in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return replies


def evaluate(model, tokenizer, dataset, max_new_tokens: int = 8, batch_size: int = 64) -> dict:
    """Exact-match accuracy over rows with a `text` field (or (prompt, answer) pairs), overall and per task."""
    pairs = [parse_llama2(row["text"]) if isinstance(row, dict) else tuple(row) for row in dataset]
    prompts, answers = [p for p, _ in pairs], [a for _, a in pairs]
    replies = generate_answers(model, tokenizer, prompts, max_new_tokens, batch_size)
    hits = defaultdict(list)
    for p, a, r in zip(prompts, answers, replies):
        hits[task_of(p)].append(score_answer(r, a))
    correct = sum(sum(v) for v in hits.values())
    return {
        "accuracy": correct / max(1, len(pairs)),
        "n": len(pairs),
        "per_task": {t: sum(v) / len(v) for t, v in sorted(hits.items())},
        "samples": [{"prompt": p, "answer": a, "reply": r} for p, a, r in list(zip(prompts, answers, replies))[:5]],
    }
