"""What the fine-tune trains on and how it measures: a tokenizer padded for training, rows tokenized with
answer-only labels for TRL's SFTTrainer, and the held-out score (or sample replies) before and after.
"""

from __future__ import annotations

from pathlib import Path

from .config import FinetuneConfig
from .data import load_instruction_dataset
from .evaluate import evaluate, generate_answers
from .hub import is_local
from .i18n import _
from .paths import EMBEDDED_DATASET
from .tasks import format_llama2, parse_llama2


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


def _tokenize(tokenizer, texts: list[str], completion_only_loss: bool) -> tuple[list[list[int]], list[int]]:
    """(token ids of each whole row, how many of them are the prompt's: 0 when the loss covers every token)."""
    ids, heads = [], []
    for text in texts:
        row = tokenizer(text, add_special_tokens=False).input_ids
        n = 0
        if completion_only_loss:
            head = tokenizer(format_llama2(parse_llama2(text)[0]), add_special_tokens=False).input_ids
            while n < min(len(head), len(row)) and head[n] == row[n]:  # the prompt's tokens: where row and prompt agree
                n += 1
        ids.append(row)
        heads.append(n)
    return ids, heads


def sft_dataset(tokenizer, texts: list[str], max_length: int, completion_only_loss: bool = True):
    """Rows tokenized as lora_lab.evaluate tokenizes prompts, with labels; SFTTrainer trains on them as they are.

    Every row already starts with `<s>`. TRL tokenizes a `text` row with the tokenizer's defaults,
    which add a second `<s>` (a double BOS the model never sees at inference), so the kit tokenizes
    with add_special_tokens=False itself; a dataset with `input_ids` is used by SFTTrainer unchanged.
    """
    from datasets import Dataset

    ids, heads = _tokenize(tokenizer, texts, completion_only_loss)
    ids = [row[:max_length] for row in ids]
    labels = [[-100] * min(n, len(row)) + row[n:] for row, n in zip(ids, heads)]
    return Dataset.from_dict({"text": list(texts), "input_ids": ids, "labels": labels})


def fit_to_max_length(tokenizer, texts: list[str], max_length: int, completion_only_loss: bool = True):
    """(sft_dataset of the rows that keep a token to learn within max_length, what the cut did), before any model loads.

    A row whose prompt alone fills max_length has no target token left: its loss is 0/0 (nan), and a
    run of such rows trains on nothing. Those rows are dropped and counted. The report dict holds
    rows, dropped, cut (rows that keep part of their answer), fits_all (the max_length at which no
    row is cut) and shortest_prompt (tokens). Raises ConfigError when no row keeps a target token.
    """
    from .config import ConfigError

    ids, heads = _tokenize(tokenizer, texts, completion_only_loss)
    first = [max(n, 1) for n in heads]  # the first token is never a target (nothing before it predicts it)
    keep = [i for i, (row, n) in enumerate(zip(ids, first)) if min(len(row), max_length) > n]
    report = {"rows": len(texts), "dropped": len(texts) - len(keep), "fits_all": max(map(len, ids)),
              "cut": sum(1 for i in keep if len(ids[i]) > max_length), "shortest_prompt": min(first)}
    if not keep:
        raise ConfigError(f"max_length={max_length} is not accepted for this data: it leaves no answer token in any of "
                          f"the {len(texts)} training rows (the shortest prompt alone is {min(first)} tokens). Use "
                          f"max_length >= {min(first) + 1} to train on some rows, {report['fits_all']} to cut none")
    return sft_dataset(tokenizer, [texts[i] for i in keep], max_length, completion_only_loss), report


def describe_fit(report: dict, max_length: int) -> str | None:
    """One line on what max_length cuts (in the kit's language), or None when every row fits whole."""
    if not report["dropped"] and not report["cut"]:
        return None
    return _("max_length={max_length}: {dropped:,} of {rows:,} training rows ({share:.0%}) keep no answer token and "
             "are dropped; {cut:,} more are cut short. At max_length={fits_all} every row fits whole").format(
        max_length=max_length, dropped=report["dropped"], rows=report["rows"], share=report["dropped"] / report["rows"],
        cut=report["cut"], fits_all=report["fits_all"])


def eval_rows_for(config: FinetuneConfig):
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
