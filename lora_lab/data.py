"""Load instruction data in the Llama-2 chat format of `mlabonne/guanaco-llama2-1k`.

The default is the embedded data in data/tiny-instruct (train and a held-out eval split); a hub id
loads the real dataset on Colab. Every row is checked: one `text` field, `<s>[INST] ... [/INST] ... </s>`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .hub import is_local, require_hub
from .paths import EMBEDDED_DATASET
from .tasks import parse_llama2

HUB_DATASET = "mlabonne/guanaco-llama2-1k"   # the classic Colab recipe's 1,000 rows
SPLITS = ("train", "eval")


def check_rows(rows: list, source: str) -> list[str]:
    """Return the `text` of every row, or raise ValueError naming the first bad row and why."""
    texts = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "text" not in row:
            keys = list(row) if isinstance(row, dict) else type(row).__name__
            raise ValueError(f"{source}: row {i} has no 'text' field (it has {keys}); "
                             "each row must be {'text': '<s>[INST] prompt [/INST] answer </s>'}")
        if not isinstance(row["text"], str):
            raise ValueError(f"{source}: row {i}: 'text' must be a string, got {type(row['text']).__name__}")
        try:
            parse_llama2(row["text"])
        except ValueError as err:
            raise ValueError(f"{source}: row {i}: {err}") from None
        texts.append(row["text"])
    return texts


def read_jsonl(path: Path) -> list:
    """Read a JSON-lines file; ValueError naming the file and line of text that is not UTF-8 or not JSON, or no rows."""
    rows = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}: line {n} is not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                 f"{err.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}: line {n} is not valid JSON ({err.msg}): {line[:80]!r}") from None
    if not rows:
        raise ValueError(f"{path}: the file holds no rows; each line must be one JSON object "
                         "{'text': '<s>[INST] prompt [/INST] answer </s>'}")
    return rows


def load_instruction_dataset(name_or_path: str | os.PathLike | None = None, split: str = "train"):
    """A `datasets.Dataset` with one `text` column: the embedded data by default, a folder/file, or a hub id."""
    from datasets import Dataset, load_dataset

    if split not in SPLITS:
        raise ValueError(f"split={split!r} is not one of {SPLITS}")
    source = EMBEDDED_DATASET if name_or_path is None else name_or_path
    if is_local(source):
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / f"{split}.jsonl"
            if not path.exists():
                raise FileNotFoundError(f"name_or_path={str(source)!r} has no {split}.jsonl "
                                        f"(a dataset folder holds {', '.join(s + '.jsonl' for s in SPLITS)})")
        rows = read_jsonl(path)
    else:
        if split != "train":
            raise ValueError(f"split={split!r}: the hub dataset {str(source)!r} has only a 'train' split; "
                             "hold rows out with Dataset.train_test_split, or score generations by hand")
        require_hub(str(source), "dataset", "load_instruction_dataset() with no argument")
        rows = list(load_dataset(str(source), split="train"))
        path = source
    return Dataset.from_dict({"text": check_rows(rows, str(path))})
