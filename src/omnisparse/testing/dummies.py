"""Random models and batches for tests: the ``tiny`` preset's architecture with a 17-symbol vocabulary."""

from __future__ import annotations

import torch

from omnisparse.config import ModelConfig, load_config
from omnisparse.models.transducer import Transducer

VOCAB = 17  # blank + 16 symbols: small enough for brute-force checks, large enough to be non-trivial


def tiny_model_config(**overrides) -> ModelConfig:
    """The ``tiny`` preset's model section with ``vocab_size = VOCAB`` and ``overrides`` (field -> value)."""
    cfg = load_config("tiny").model
    cfg.vocab_size = VOCAB
    for key, value in overrides.items():
        if not hasattr(cfg, key):
            raise AttributeError(f"ModelConfig has no field {key!r}")
        setattr(cfg, key, value)
    return cfg


def tiny_model(seed: int = 0, **overrides) -> Transducer:
    """A randomly initialised (``torch.manual_seed(seed)``) :func:`tiny_model_config` model in eval mode."""
    cfg = tiny_model_config(**overrides)
    torch.manual_seed(seed)
    return Transducer.from_config(cfg).eval()


def random_batch(B: int = 2, T: int = 24, U: int = 4, seed: int = 1, vocab: int = VOCAB,
                 feat_dim: int = 80) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(feats (B, T, feat_dim), feat_lens (B,), tokens (B, U) in [1, vocab), token_lens (B,))``; the
    first utterance is full length, the others 5 frames and 1 token shorter (padding is exercised)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, T, feat_dim, generator=g)
    tokens = torch.randint(1, vocab, (B, U), generator=g)
    feat_lens = torch.tensor([T] + [T - 5] * (B - 1))
    token_lens = torch.tensor([U] + [U - 1] * (B - 1))
    return feats, feat_lens, tokens, token_lens
