"""Hugging Face hub access that fails fast and clearly when the hub cannot be reached."""

from __future__ import annotations

import os
import socket
from pathlib import Path

_TRUE = {"1", "true", "yes", "on"}


class HubUnavailableError(ConnectionError):
    """A hub id was asked for, it is not cached, and the hub cannot be reached."""


def is_local(name_or_path: str | os.PathLike) -> bool:
    """True for a folder or file on disk (a local copy of a model or dataset)."""
    return Path(name_or_path).expanduser().exists()


PATH_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".arrow", ".yaml", ".yml", ".safetensors", ".bin")


def looks_like_path(name: str) -> bool:
    """True for text that names a file or folder, never a hub id ('name' or 'owner/name'): ./x, /x, ~/x, a/b/c, x.jsonl."""
    name = str(name).strip()
    return (name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1
            or name.lower().endswith(PATH_SUFFIXES))


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE or HF_DATASETS_OFFLINE says the hub must not be used."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _cached(repo_id: str, repo_type: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    probe = "config.json" if repo_type == "model" else "README.md"
    return isinstance(try_to_load_from_cache(repo_id, probe, repo_type=repo_type), str)


def _reachable(host: str = "huggingface.co", port: int = 443, timeout: float = 3.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def require_hub(repo_id: str, repo_type: str, instead: str) -> None:
    """Raise HubUnavailableError at once (no retries) unless `repo_id` is cached or the hub answers.

    `instead` says what to do without the hub, e.g. "call load_base_model() with no argument". A
    `repo_id` that can only be a path (lora_lab.hub.looks_like_path) and is not on disk raises
    FileNotFoundError naming it: a mistyped local path is not a hub failure.
    """
    if looks_like_path(repo_id):
        raise FileNotFoundError(f"{repo_type} {repo_id!r} is not a file or folder here (looked from {os.getcwd()}); "
                                "check the path. A Hugging Face hub id has the form 'owner/name'")
    if _cached(repo_id, repo_type):
        return
    if hub_offline():
        why = "the hub is switched off here (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set)"
    elif not _reachable():
        why = "huggingface.co cannot be reached from this machine"
    else:
        return
    raise HubUnavailableError(
        f"lora-lab: cannot load {repo_type} {repo_id!r} from the Hugging Face hub: {why}, and it is not "
        f"in the local cache. Offline, use the embedded default: {instead}. Or download it where there "
        f"is internet (e.g. Colab) and pass the local folder instead of the hub id."
    )
