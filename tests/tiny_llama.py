"""A tiny random Llama for adapter tests, the token ids they run it on, and a trained-looking adapter."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

IDS = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(1))  # (batch, seq)


def tiny(seed: int = 0, tie: bool = False) -> LlamaForCausalLM:
    """2 layers, hidden 64, vocabulary 128, in eval mode; tie: lm_head shares the embedding matrix."""
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                        num_key_value_heads=4, vocab_size=128, tie_word_embeddings=tie)).eval()


def train_a_little(model, seed: int = 3):
    """A trained-looking adapter: every trainable tensor moved by the same seeded noise. Returns the model."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def logits(model) -> torch.Tensor:
    """The model's logits on IDS, (2, 12, vocabulary)."""
    with torch.no_grad():
        return model(IDS).logits
