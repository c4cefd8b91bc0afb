"""An LSTM language model over the recogniser's own BPE tokens, for shallow fusion in beam search.

Every sentence is ``[bos] + tokens`` in and ``tokens + [eos]`` out, with ``bos = eos = blank_id``
(id 0, ``<blk>``: never a real token). :meth:`TokenLM.step` scores the next token for a batch of
hypotheses with explicit state, as the transducer's predictor does, so a beam carries one LM state
per hypothesis. The LM is tied to one tokenizer: its checkpoint records :func:`pieces_digest`, and
:func:`load_token_lm` refuses a recogniser whose tokenizer has other pieces.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

from omnisparse.io.checkpoint import CheckpointError, load_weights, resolve_checkpoint

LMState = tuple[Tensor, Tensor]  # (h, c), each (N, num_layers, hidden_dim): batch first, as beams stack them


def pieces_digest(tokenizer) -> str:
    """sha256 of the tokenizer's pieces in id order: what an LM's token ids mean."""
    sp = tokenizer.sp
    return hashlib.sha256("\n".join(sp.id_to_piece(i) for i in range(sp.get_piece_size())).encode()).hexdigest()


class TokenLM(nn.Module):
    """``tokens (B, U)`` -> next-token logits ``(B, U, V)``; ``vocab_size`` includes the blank."""

    def __init__(self, vocab_size: int, embed_dim: int = 256, hidden_dim: int = 512, num_layers: int = 2,
                 dropout: float = 0.1, bos_eos: int = 0):
        super().__init__()
        self.vocab_size, self.bos_eos = vocab_size, bos_eos
        self.hidden_dim, self.num_layers = hidden_dim, num_layers
        self.embed = nn.Embedding(vocab_size, embed_dim)
        self.drop = nn.Dropout(dropout)
        self.lstm = nn.LSTM(embed_dim, hidden_dim, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, tokens: Tensor) -> Tensor:
        y, _ = self.lstm(self.drop(self.embed(tokens)))
        return self.out(self.drop(y))

    def init_state(self, n: int, device: torch.device | str = "cpu") -> LMState:
        z = torch.zeros(n, self.num_layers, self.hidden_dim, device=device)
        return z, z.clone()

    def step(self, tokens: Tensor, state: LMState) -> tuple[Tensor, LMState]:
        """``tokens (N,)`` after ``state`` -> ``(log p(next token) (N, V), new state)``."""
        h, c = (s.transpose(0, 1).contiguous() for s in state)
        y, (h, c) = self.lstm(self.embed(tokens)[:, None], (h, c))
        return self.out(y[:, 0]).log_softmax(-1), (h.transpose(0, 1), c.transpose(0, 1))

    def start(self, n: int, device: torch.device | str = "cpu") -> tuple[Tensor, LMState]:
        """Log-probs of the first token of ``n`` sentences and the state after ``bos``."""
        return self.step(torch.full((n,), self.bos_eos, dtype=torch.int64, device=device), self.init_state(n, device))

    @torch.no_grad()
    def sentence_log_prob(self, ids: list[int]) -> float:
        """log p(ids + eos) (natural log), for tests and scoring."""
        x = torch.tensor([[self.bos_eos, *ids]])
        y = torch.tensor([*ids, self.bos_eos])
        return float(self(x)[0].log_softmax(-1).gather(1, y[:, None]).sum())


def lm_from_state(state: dict) -> TokenLM:
    """A TokenLM of the shape a checkpoint's ``state["lm"]`` records."""
    a = state.get("lm")
    if not isinstance(a, dict) or state.get("kind") != "lm":
        raise CheckpointError("not a language-model checkpoint (train one with `omnisparse train-lm`)")
    return TokenLM(a["vocab_size"], a["embed_dim"], a["hidden_dim"], a["num_layers"], a["dropout"], a["bos_eos"])


def load_token_lm(path: str | Path, tokenizer: Optional[object] = None) -> TokenLM:
    """The LM of a ``train-lm`` run directory or checkpoint (eval mode); with ``tokenizer``, refuses
    an LM trained on other pieces (CheckpointError, one line)."""
    ckpt, state = resolve_checkpoint(path)
    lm = lm_from_state(state)
    if tokenizer is not None and state["lm"]["pieces_sha256"] != pieces_digest(tokenizer):
        raise CheckpointError(f"{path}: this LM was trained on another tokenizer's pieces than the recogniser's "
                              f"(train it on the same corpus and vocab_size)")
    load_weights(lm, ckpt)
    return lm.eval()
