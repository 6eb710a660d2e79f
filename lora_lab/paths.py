"""Where the embedded defaults live: data/ at the top of a clone, lora_lab/embedded/ in an installed wheel."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_INSTALLED = _PACKAGE / "embedded"        # a wheel or `pip install git+URL` ships data/ here
_CLONE = _PACKAGE.parent / "data"         # a clone, or an editable install of one
DATA_DIR = _INSTALLED if (_INSTALLED / "tiny-llama").is_dir() else _CLONE
EMBEDDED_MODEL = DATA_DIR / "tiny-llama"       # pretrained tiny Llama + tokenizer
EMBEDDED_DATASET = DATA_DIR / "tiny-instruct"  # train.jsonl and eval.jsonl
