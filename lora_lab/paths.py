"""Where the embedded defaults live: data/ at the top of the repository."""

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
EMBEDDED_MODEL = DATA_DIR / "tiny-llama"       # pretrained tiny Llama + tokenizer
EMBEDDED_DATASET = DATA_DIR / "tiny-instruct"  # train.jsonl and eval.jsonl
