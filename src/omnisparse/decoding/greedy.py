"""Batched greedy RNN-T decoding, offline and frame by frame (for streaming).

``GreedyState`` carries everything between calls: the predictor state, the projected predictor
output of the last emitted token, and the hypotheses so far. ``greedy_search`` decodes whole
encoder outputs; ``greedy_step_frames`` continues a ``GreedyState`` over new encoder frames, so a
streaming decoder calling it chunk by chunk emits exactly what ``greedy_search`` emits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def select_state(mask: Tensor, new: Any, old: Any) -> Any:
    """Per batch row (dim 0 of every tensor): ``new`` where ``mask`` else ``old``; nested lists/tuples."""
    if torch.is_tensor(new):
        return torch.where(mask.view(-1, *([1] * (new.dim() - 1))), new, old)
    if isinstance(new, (list, tuple)):
        return type(new)(select_state(mask, n, o) for n, o in zip(new, old))
    raise TypeError(f"cannot select state of type {type(new)}")


@dataclass
class GreedyState:
    pred_state: Any
    pred_proj: Tensor  # (B, J) projected predictor output for the last emitted token
    hyps: list[list[int]]
    frames: int = 0


def init_greedy(model, batch_size: int, device: torch.device | None = None) -> GreedyState:
    device = device or next(model.parameters()).device
    blank = model.config.blank_id
    state = model.predictor.init_state(batch_size)
    tok = torch.full((batch_size,), blank, dtype=torch.int64, device=device)
    out, state = model.predictor.step(tok, state)
    return GreedyState(state, model.joiner.project_pred(out), [[] for _ in range(batch_size)])


@torch.no_grad()
def greedy_step_frames(model, enc: Tensor, gs: GreedyState, enc_lens: Tensor | None = None,
                       max_symbols: int = 4) -> GreedyState:
    """Consume ``enc (B, T, d_model)`` frames (rows shorter than ``enc_lens`` stop early)."""
    blank = model.config.blank_id
    B, T, _ = enc.shape
    enc_p = model.joiner.project_enc(enc)
    lens = enc_lens if enc_lens is not None else torch.full((B,), T, dtype=torch.int64, device=enc.device)
    for t in range(T):
        active = t < lens
        for _ in range(max_symbols):
            y = model.joiner.step(enc_p[:, t], gs.pred_proj).argmax(-1)
            emit = active & (y != blank)
            if not bool(emit.any()):
                break
            for b in emit.nonzero().flatten().tolist():
                gs.hyps[b].append(int(y[b]))
            out, new_state = model.predictor.step(torch.where(emit, y, torch.full_like(y, blank)), gs.pred_state)
            gs.pred_state = select_state(emit, new_state, gs.pred_state)
            gs.pred_proj = torch.where(emit[:, None], model.joiner.project_pred(out), gs.pred_proj)
    gs.frames += T
    return gs


@torch.no_grad()
def greedy_search(model, enc: Tensor, enc_lens: Tensor, max_symbols: int = 4) -> list[list[int]]:
    """``enc (B, T, d_model)``, ``enc_lens (B,)`` -> token ids per utterance (blank removed)."""
    gs = init_greedy(model, enc.shape[0], enc.device)
    return greedy_step_frames(model, enc, gs, enc_lens, max_symbols).hyps
