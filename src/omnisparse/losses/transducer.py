"""The training objective of a Transducer: RNN-T loss (fused joiner path) + optional CTC auxiliary.

Wrapped as an ``nn.Module`` so that DistributedDataParallel sees one forward per sub-network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from omnisparse.losses.rnnt import rnnt_loss_from_joiner


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar: mean over utterances of (rnnt + ctc_weight * ctc)
    rnnt: float
    ctc: float
    num_utts: int
    num_tokens: int


class TransducerLoss(nn.Module):
    def __init__(self, model: nn.Module, loss_dtype: torch.dtype = torch.float32):
        super().__init__()
        self.model = model
        self.loss_dtype = loss_dtype

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor, tokens: torch.Tensor,
                token_lens: torch.Tensor, mode: str = "stream") -> LossOutput:
        """feats (B, T, 80), feat_lens (B,), tokens (B, U) padded, token_lens (B,)."""
        m = self.model
        out = m(feats, feat_lens, tokens, token_lens, mode=mode)
        j = m.joiner
        enc_p = j.project_enc(out.enc)  # (B, T', J)
        pred_p = j.project_pred(out.pred)  # (B, U+1, J)
        rnnt = rnnt_loss_from_joiner(enc_p, pred_p, j.out.effective_weight(), j.out.bias, tokens,
                                     out.enc_lens, token_lens, blank=m.config.blank_id, reduction="mean",
                                     dtype=self.loss_dtype)
        loss = rnnt
        ctc_val = 0.0
        if getattr(out, "ctc_logits", None) is not None and m.config.ctc_weight > 0:
            lp = out.ctc_logits.log_softmax(-1).transpose(0, 1)  # (T', B, V)
            ctc = F.ctc_loss(lp, tokens, out.enc_lens, token_lens, blank=m.config.blank_id,
                             reduction="sum", zero_infinity=True) / max(1, feats.shape[0])
            loss = loss + m.config.ctc_weight * ctc
            ctc_val = float(ctc.detach())
        return LossOutput(loss=loss, rnnt=float(rnnt.detach()), ctc=ctc_val, num_utts=int(feats.shape[0]),
                          num_tokens=int(token_lens.sum()))
