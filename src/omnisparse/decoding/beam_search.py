"""Modified beam search for RNN-T (as in icefall): at most one symbol per frame, hypotheses with
the same token sequence merged (log-sum-exp of their scores), ``beam`` hypotheses kept per frame.

All hypotheses of one utterance are scored in one batched joiner/predictor call per frame. The search
is frame-synchronous, so it streams: :class:`BeamState` holds the hypotheses between chunks,
:func:`beam_step_frames` advances it by a chunk's encoder frames, and decoding an utterance in pieces
gives the tokens of decoding it whole (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class _Hyp:
    tokens: tuple[int, ...]
    score: float
    pred_state: Any  # predictor state of this hypothesis (batch of 1)
    pred_proj: Tensor  # (J,)


def _stack_states(states: list[Any]) -> Any:
    first = states[0]
    if torch.is_tensor(first):
        return torch.cat(states, 0)
    return type(first)(_stack_states([s[i] for s in states]) for i in range(len(first)))


def _row(state: Any, i: int) -> Any:
    if torch.is_tensor(state):
        return state[i:i + 1]
    return type(state)(_row(s, i) for s in state)


@dataclass
class BeamState:
    """The hypotheses of one utterance between frames (best first) and the beam width."""

    hyps: list[_Hyp]
    beam: int

    @property
    def best(self) -> list[int]:
        """The best hypothesis's tokens so far."""
        return list(max(self.hyps, key=lambda h: h.score).tokens)


@torch.no_grad()
def init_beam(model, beam: int = 4, device: torch.device | str = "cpu") -> BeamState:
    """The search before the first frame: one empty hypothesis, the predictor fed blank."""
    blank = model.config.blank_id
    st = model.predictor.init_state(1)
    out, st = model.predictor.step(torch.full((1,), blank, dtype=torch.int64, device=device), st)
    return BeamState([_Hyp((), 0.0, st, model.joiner.project_pred(out)[0])], beam)


@torch.no_grad()
def beam_step_frames(model, enc: Tensor, state: BeamState) -> BeamState:
    """Advance ``state`` (in place, also returned) over ``enc (T, d_model)``, one utterance's next
    encoder frames."""
    blank = model.config.blank_id
    dev = enc.device
    beam = state.beam
    enc_p = model.joiner.project_enc(enc)  # (T, J)
    hyps = state.hyps
    for t in range(enc_p.shape[0]):
        proj = torch.stack([h.pred_proj for h in hyps])  # (H, J)
        logp = model.joiner.step(enc_p[t].expand_as(proj), proj).log_softmax(-1)  # (H, V)
        scores = torch.tensor([h.score for h in hyps], device=dev)[:, None] + logp
        flat = scores.flatten()
        k = min(beam, flat.numel())
        top = flat.topk(k).indices.tolist()
        V = logp.shape[1]
        merged: dict[tuple[int, ...], tuple[float, int, int]] = {}
        for idx in top:
            h_i, tok = divmod(idx, V)
            s = float(flat[idx])
            seq = hyps[h_i].tokens if tok == blank else hyps[h_i].tokens + (tok,)
            if seq in merged:
                prev = merged[seq]
                best = prev if prev[0] >= s else (s, h_i, tok)
                merged[seq] = (float(torch.logaddexp(torch.tensor(prev[0]), torch.tensor(s))), best[1], best[2])
            else:
                merged[seq] = (s, h_i, tok)
        # advance the predictor for hypotheses that emitted a token, in one batch
        emitters = [(seq, v) for seq, v in merged.items() if v[2] != blank]
        new_hyps = [_Hyp(seq, v[0], hyps[v[1]].pred_state, hyps[v[1]].pred_proj) for seq, v in merged.items() if v[2] == blank]
        if emitters:
            states = _stack_states([hyps[v[1]].pred_state for _, v in emitters])
            toks = torch.tensor([v[2] for _, v in emitters], dtype=torch.int64, device=dev)
            out, states = model.predictor.step(toks, states)
            projs = model.joiner.project_pred(out)
            for i, (seq, v) in enumerate(emitters):
                new_hyps.append(_Hyp(seq, v[0], _row(states, i), projs[i]))
        hyps = sorted(new_hyps, key=lambda h: -h.score)[:beam]
    state.hyps = hyps
    return state


@torch.no_grad()
def modified_beam_search_one(model, enc: Tensor, beam: int = 4) -> list[int]:
    """``enc (T, d_model)`` of one utterance -> best token sequence."""
    return beam_step_frames(model, enc, init_beam(model, beam, enc.device)).best


@torch.no_grad()
def modified_beam_search(model, enc: Tensor, enc_lens: Tensor, beam: int = 4) -> list[list[int]]:
    """``enc (B, T, d_model)``, ``enc_lens (B,)`` -> best token sequence per utterance."""
    return [modified_beam_search_one(model, enc[b, : int(enc_lens[b])], beam) for b in range(enc.shape[0])]

