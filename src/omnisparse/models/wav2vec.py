"""wav2vec 2.0 pre-training of the RNN-T's own :class:`Encoder` (fbank input, not the raw-wave CNN).

Pipeline (``feats (B, T, 80)`` at 10 ms, ``S`` the subsampling factor, ``T' = T // S``)::

    z = encoder.subsampling(feats)                      # (B, T', d) unmasked subsampled frames
    c = encoder(feats, mode, input_mask=mask,           # same forward as the RNN-T's: dropout, masked
                mask_emb=mask_emb)                      # frames -> learned mask_emb (d,), the blocks
    q = project_q(quantizer(z))                         # (B, T', D) targets, D = codevector_dim
    p = final_proj(c)                                   # (B, T', D)
    loss = contrastive(p, q, mask) + diversity_weight * diversity + feature_penalty_weight * mean(z_pre ** 2)

``mask (B, T')`` comes from :func:`omnisparse.losses.contrastive.compute_mask_spans` over the encoder
frames. ``z`` is captured by a forward hook on ``encoder.subsampling`` (so the encoder runs exactly
its RNN-T forward and the subsampling runs once); ``z_pre`` by a hook on ``encoder.subsampling.proj``:
the subsampling's output before its final LayerNorm, the analogue of fairseq's feature penalty on the
CNN features before their LayerNorm.

The quantizer sees the unmasked ``z`` WITHOUT detaching it (as fairseq): the targets' gradient also
trains the subsampling. ``z`` is the output of un-pruned modules (the subsampling has no
PrunableLinear), so masks of a sparse path never change the targets' input. ``encoder.*`` keys of
the state dict are exactly those of ``Transducer.encoder``: a fine-tuning run loads them
(``train.init_encoder_from``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor, nn

from .encoder import Encoder
from .layers import PrunableLinear, prunable_linears_of
from .quantizer import GumbelQuantizer
from ..losses.contrastive import contrastive_loss


def encoder_prunable_groups(encoder: Encoder, prefix: str = "encoder"
                            ) -> "OrderedDict[str, list[tuple[str, PrunableLinear]]]":
    """``gene -> [(module name, module)]`` of the encoder blocks, named as
    :meth:`omnisparse.models.transducer.Transducer.prunable_groups` names them."""
    groups: OrderedDict[str, list[tuple[str, PrunableLinear]]] = OrderedDict()
    for i, layer in enumerate(encoder.layers):
        for gene, sub in (("attn", layer.attn), ("conv", layer.conv), ("ffn", layer.ffn)):
            if sub is not None:
                groups[f"enc.{i}.{gene}"] = prunable_linears_of(sub, f"{prefix}.layers.{i}.{gene}")
    return groups


@dataclass
class PretrainOutput:
    """One path's result. ``loss`` = contrastive + weighted diversity + weighted feature penalty
    (scalar, with graph); the parts are detached floats; ``accuracy``: masked frames whose positive
    beats every distractor; ``trivial`` / ``hard_accuracy``: see :class:`ContrastiveOutput`;
    ``num_masked``: masked encoder frames of the batch."""

    loss: Tensor
    contrastive: float
    diversity: float
    feature_penalty: float
    accuracy: float
    code_perplexity: float
    prob_perplexity: float
    temperature: float
    num_masked: int
    trivial: float = 0.0
    hard_accuracy: float = 0.0


class Wav2VecPretrainModel(nn.Module):
    """Encoder + mask embedding + Gumbel quantizer + projections. See the module docstring."""

    def __init__(self, encoder: Encoder, groups: int = 2, entries: int = 320, codevector_dim: int = 256,
                 max_temp: float = 2.0, min_temp: float = 0.5, temp_decay: float = 0.999995,
                 num_negatives: int = 100, logit_temp: float = 0.1, diversity_weight: float = 0.1,
                 feature_penalty_weight: float = 10.0):
        super().__init__()
        d = encoder.d_model
        self.encoder = encoder
        self.mask_emb = nn.Parameter(torch.empty(d).uniform_())  # fairseq's init
        self.quantizer = GumbelQuantizer(d, groups, entries, codevector_dim, max_temp, min_temp, temp_decay)
        self.project_q = nn.Linear(codevector_dim, codevector_dim)
        self.final_proj = nn.Linear(d, codevector_dim)
        self.num_negatives = num_negatives
        self.logit_temp = logit_temp
        self.diversity_weight = diversity_weight
        self.feature_penalty_weight = feature_penalty_weight
        self._captured: dict[str, Tensor] = {}
        encoder.subsampling.register_forward_hook(self._capture("z", lambda out: out[0]))
        encoder.subsampling.proj.register_forward_hook(self._capture("z_pre", lambda out: out))

    def _capture(self, key: str, pick):
        def hook(module, inputs, output):
            self._captured[key] = pick(output)
        return hook

    @classmethod
    def from_config(cls, model_cfg, pretrain_cfg) -> "Wav2VecPretrainModel":
        """From a :class:`omnisparse.config.ModelConfig` (the encoder part) and a ``PretrainConfig``."""
        p = pretrain_cfg
        return cls(Encoder.from_config(model_cfg), p.codebook_groups, p.codebook_entries, p.codevector_dim,
                   p.temp_max, p.temp_min, p.temp_decay, p.num_negatives, p.logit_temp, p.diversity_weight,
                   p.feature_penalty_weight)

    def prunable_groups(self) -> "OrderedDict[str, list[tuple[str, PrunableLinear]]]":
        """The encoder's genes (for :class:`omnisparse.sparsity.masks.MaskBank`)."""
        return encoder_prunable_groups(self.encoder)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encoder_frames(self, feat_lens: Tensor) -> Tensor:
        """Encoder frames ``(B,)`` of utterances of ``feat_lens`` fbank frames."""
        return self.encoder.output_lengths(feat_lens)

    def forward(self, feats: Tensor, feat_lens: Tensor, mask: Tensor, mode: str = "full",
                generator: Optional[torch.Generator] = None) -> PretrainOutput:
        """``feats (B, T, F)``, ``feat_lens (B,)``, ``mask (B, T // S)`` bool masked encoder frames
        (inside each utterance's length); ``generator`` draws the distractors (None: global RNG)."""
        self._captured.clear()
        try:
            c, lens = self.encoder(feats, feat_lens, mode, input_mask=mask, mask_emb=self.mask_emb)
            z, z_pre = self._captured["z"], self._captured["z_pre"]
        finally:
            self._captured.clear()
        valid = torch.arange(c.size(1), device=c.device)[None, :] < lens[:, None]
        feat_pen = z_pre.float().pow(2).mean(-1)[valid].mean() if bool(valid.any()) else z_pre.sum() * 0.0
        mask = mask.to(c.device)
        qo = self.quantizer(z, frame_mask=mask)
        targets = self.project_q(qo.quantized)
        pred = self.final_proj(c)
        con = contrastive_loss(pred, targets, mask, self.num_negatives, self.logit_temp, generator)
        loss = con.loss + self.diversity_weight * qo.diversity_loss + self.feature_penalty_weight * feat_pen
        return PretrainOutput(loss=loss, contrastive=float(con.loss.detach()), diversity=float(qo.diversity_loss.detach()),
                              feature_penalty=float(feat_pen.detach()), accuracy=con.accuracy,
                              code_perplexity=float(qo.code_perplexity), prob_perplexity=float(qo.prob_perplexity.detach()),
                              temperature=qo.temperature, num_masked=con.num_masked, trivial=con.trivial,
                              hard_accuracy=con.hard_accuracy)
