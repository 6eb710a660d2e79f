"""Every test runs offline, as CI does: a hub id must fail fast, never retry for 30 s."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before anything imports huggingface_hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from lora_lab.paths import EMBEDDED_DATASET


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """The embedded data cut to 64 training and 16 held-out rows: for runs that test the plumbing, not the lift."""
    folder = tmp_path_factory.mktemp("small-data")
    for split, n in (("train", 64), ("eval", 16)):
        lines = (EMBEDDED_DATASET / f"{split}.jsonl").read_text().splitlines()[:n]
        (folder / f"{split}.jsonl").write_text("\n".join(lines) + "\n")
    return folder
