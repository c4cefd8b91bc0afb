"""Modified beam search for RNN-T (as in icefall): at most one symbol per frame, hypotheses with
the same token sequence merged (log-sum-exp of their scores), ``beam`` hypotheses kept per frame.

All hypotheses of one utterance are scored in one batched joiner/predictor call per frame. The search
is frame-synchronous, so it streams: :class:`BeamState` holds the hypotheses between chunks,
:func:`beam_step_frames` advances it by a chunk's encoder frames, and decoding an utterance in pieces
gives the tokens of decoding it whole (tested).

Shallow fusion with an external token LM (:class:`~omnisparse.models.lm.TokenLM`, ``lm`` and
``lm_scale`` > 0): every non-blank expansion's score gains ``lm_scale * log p_LM(token | tokens so
far) + token_bonus``; each hypothesis carries its LM state, advanced in one batch with the
predictor's. The bonus offsets the LM's cost per token, which alone pushes the search towards
deletions; without an LM, ``token_bonus`` > 0 rewards emitted tokens alone (plain beam search deletes
more than greedy search). With ``lm_scale`` 0 (or no LM) and ``token_bonus`` 0 the search is exactly
the plain one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor


@dataclass
class _Hyp:
    tokens: tuple[int, ...]
    score: float
    pred_state: Any  # predictor state of this hypothesis (batch of 1)
    pred_proj: Tensor  # (J,)
    lm_state: Any = None  # the LM's state after these tokens (batch of 1); None without fusion
    lm_logp: Optional[Tensor] = None  # (V,) the LM's log-probs of the next token


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
    """The hypotheses of one utterance between frames (best first), the beam width and the LM fused in."""

    hyps: list[_Hyp]
    beam: int
    lm: Any = None
    lm_scale: float = 0.0
    token_bonus: float = 0.0

    @property
    def fused(self) -> bool:
        return self.lm is not None and self.lm_scale > 0

    @property
    def best(self) -> list[int]:
        """The best hypothesis's tokens so far."""
        return list(max(self.hyps, key=lambda h: h.score).tokens)


@torch.no_grad()
def init_beam(model, beam: int = 4, device: torch.device | str = "cpu", lm=None, lm_scale: float = 0.0,
              token_bonus: float = 0.0) -> BeamState:
    """The search before the first frame: one empty hypothesis, the predictor fed blank (and the
    LM its sentence start, when fused)."""
    blank = model.config.blank_id
    st = model.predictor.init_state(1)
    out, st = model.predictor.step(torch.full((1,), blank, dtype=torch.int64, device=device), st)
    state = BeamState([_Hyp((), 0.0, st, model.joiner.project_pred(out)[0])], beam, lm, lm_scale, token_bonus)
    if state.fused:
        logp, lm_st = lm.start(1, device)
        state.hyps[0].lm_state, state.hyps[0].lm_logp = lm_st, logp[0]
    return state


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
        if state.fused or state.token_bonus:
            bonus = torch.full_like(logp, state.token_bonus)
            if state.fused:
                bonus += state.lm_scale * torch.stack([h.lm_logp for h in hyps])
            bonus[:, blank] = 0.0
            scores = scores + bonus
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
        new_hyps = [_Hyp(seq, v[0], hyps[v[1]].pred_state, hyps[v[1]].pred_proj, hyps[v[1]].lm_state,
                         hyps[v[1]].lm_logp) for seq, v in merged.items() if v[2] == blank]
        if emitters:
            states = _stack_states([hyps[v[1]].pred_state for _, v in emitters])
            toks = torch.tensor([v[2] for _, v in emitters], dtype=torch.int64, device=dev)
            out, states = model.predictor.step(toks, states)
            projs = model.joiner.project_pred(out)
            lm_logp = lm_states = None
            if state.fused:
                lm_logp, lm_states = state.lm.step(toks, _stack_states([hyps[v[1]].lm_state for _, v in emitters]))
            for i, (seq, v) in enumerate(emitters):
                new_hyps.append(_Hyp(seq, v[0], _row(states, i), projs[i],
                                     None if lm_states is None else _row(lm_states, i),
                                     None if lm_logp is None else lm_logp[i]))
        hyps = sorted(new_hyps, key=lambda h: -h.score)[:beam]
    state.hyps = hyps
    return state


@torch.no_grad()
def modified_beam_search_one(model, enc: Tensor, beam: int = 4, lm=None, lm_scale: float = 0.0,
                             token_bonus: float = 0.0) -> list[int]:
    """``enc (T, d_model)`` of one utterance -> best token sequence."""
    return beam_step_frames(model, enc, init_beam(model, beam, enc.device, lm, lm_scale, token_bonus)).best


@torch.no_grad()
def modified_beam_search(model, enc: Tensor, enc_lens: Tensor, beam: int = 4, lm=None,
                         lm_scale: float = 0.0, token_bonus: float = 0.0) -> list[list[int]]:
    """``enc (B, T, d_model)``, ``enc_lens (B,)`` -> best token sequence per utterance."""
    return [modified_beam_search_one(model, enc[b, : int(enc_lens[b])], beam, lm, lm_scale, token_bonus)
            for b in range(enc.shape[0])]

