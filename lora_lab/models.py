"""Load the base model and tokenizer: the embedded tiny Llama by default, Llama-2-7b-chat on Colab.

Both go through transformers' `Auto*.from_pretrained`, exactly as a hub model would, so the code a
learner runs on CPU is the code that fine-tunes the real model.
"""

from __future__ import annotations

import os

import torch

from .bnb_cpu import keep_4bit_weights_as_trained
from .hub import is_local, require_hub
from .paths import EMBEDDED_MODEL

HUB_MODEL = "NousResearch/Llama-2-7b-chat-hf"  # an ungated copy of meta-llama/Llama-2-7b-chat-hf
HUB_MODEL_70B = "NousResearch/Llama-2-70b-chat-hf"  # an ungated copy of meta-llama/Llama-2-70b-chat-hf
QUANT_TYPES = ("nf4", "fp4")


def _resolve(name_or_path) -> str:
    source = str(EMBEDDED_MODEL if name_or_path is None else name_or_path)
    if not is_local(source):
        require_hub(source, "model", "load_base_model() / load_tokenizer() with no argument (the embedded tiny Llama)")
    return source


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    """The tokenizer of the embedded tiny Llama (default), a local folder or a hub id."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(_resolve(name_or_path))


def bnb_4bit_config(quant_type: str = "nf4", double_quant: bool = True, compute_dtype: torch.dtype = torch.float32,
                    quant_storage: str | torch.dtype = "uint8"):
    """A `BitsAndBytesConfig` with every QLoRA setting explicit (transformers' defaults are fp4, no double quant, fp32).

    quant_storage: the dtype the packed 4-bit codes are stored in (`bnb_4bit_quant_storage`): uint8, or under
    FSDP the compute dtype, so that FSDP shards them with the other weights (lora_lab.fsdp explains why).
    """
    from transformers import BitsAndBytesConfig

    from .fsdp import storage_dtype

    if quant_type not in QUANT_TYPES:
        raise ValueError(f"quant_type={quant_type!r} is not one of {QUANT_TYPES}")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=storage_dtype(quant_storage),
    )


def load_base_model(name_or_path: str | os.PathLike | None = None, quantization=None,
                    dtype: torch.dtype | None = None, device_map=None):
    """A causal LM from the embedded tiny Llama (default), a local folder or a hub id.

    quantization: None (full precision), "nf4" / "fp4" (4-bit with QLoRA's other settings), or a
    `BitsAndBytesConfig`. The 4-bit settings the model really got are in `describe_quantization(model)`.
    A 4-bit model keeps its stored weights as loaded: bitsandbytes' one-way CPU repacking (AVX512-BF16 CPUs
    only) is turned off, so a model evaluated first still trains, and scores alike on every CPU.
    """
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    source = _resolve(name_or_path)
    kwargs = {}
    if quantization is not None:
        if isinstance(quantization, str):
            quantization = bnb_4bit_config(quantization, compute_dtype=dtype or torch.float32)
        if not isinstance(quantization, BitsAndBytesConfig):
            raise TypeError(f"quantization={quantization!r}: expected None, one of {QUANT_TYPES} or a BitsAndBytesConfig")
        kwargs["quantization_config"] = quantization
        kwargs["device_map"] = device_map or ({"": 0} if torch.cuda.is_available() else {"": "cpu"})
    elif device_map is not None:
        kwargs["device_map"] = device_map
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    model.eval()
    if quantization is not None:  # on AVX512-BF16 CPUs bitsandbytes would otherwise repack on the first eval forward
        keep_4bit_weights_as_trained(model)
    return model


def describe_quantization(model) -> dict:
    """What quantization the model's linear layers actually hold, read from the layers, not the config."""
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    if not layers:
        return {"quantized_layers": 0, "quant_type": None}
    state = layers[0].weight.quant_state
    return {
        "quantized_layers": len(layers),
        "quant_type": state.quant_type,                      # "nf4" or "fp4"
        "double_quant": state.nested,                        # absmax stored in 8 bits?
        "blocksize": state.blocksize,
        "compute_dtype": str(layers[0].compute_dtype).replace("torch.", ""),
    }
