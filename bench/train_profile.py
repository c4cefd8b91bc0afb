"""Where a training step's time goes, for the dense recipe and its efficiency levers.

    .venv/bin/python bench/train_profile.py [--preset small] [--batches 6] [--threads 2]
                                            [--out bench/results/train_profile.json]

For each variant (the preset, then one lever changed at a time: x8 subsampling, a 128-piece BPE,
an LSTM predictor, no CTC head, 30 s batches) it draws the same real training batches (same
sampler seed, SpecAugment on) and times, per batch:

* ``enc_fwd`` / ``enc_bwd``: subsampling + conformer blocks (+ CTC head and loss when enabled);
* ``joint_fwd`` / ``joint_bwd``: predictor, joiner projections and the fused RNN-T loss;
* ``step``: the optimizer update.

The encoder backward is timed separately by cutting the graph at the encoder output (``enc`` is
detached, the joint's gradient w.r.t. it is pushed back through the encoder afterwards), so the
parts add up to one real training step. Reports seconds per step, audio seconds per wall second and
each part's share. Numbers are noisy on a shared machine: compare variants within one run.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch
import torch.nn.functional as F

from omnisparse.config import load_config
from omnisparse.data.batching import AsrDataset, SpecAugmentConfig, make_loader, make_sampler
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.prepare import prepare_training_data
from omnisparse.losses.rnnt import rnnt_loss_from_joiner
from omnisparse.models.transducer import Transducer, add_blank_prefix
from omnisparse.train.trainer import load_split_cuts
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.utils.provenance import write_result

VARIANTS = {
    "preset": {},
    "subsampling_8": {"model.subsampling": 8, "model.chunk_size": 2},
    "vocab_128": {"data.vocab_size": 128},
    "lstm_predictor": {"model.pred_type": "lstm"},
    "no_ctc": {"model.ctc_weight": 0.0},
    "batch_30s": {"data.max_duration": 30.0},
}


def _batches(cfg, n: int) -> tuple[list[dict], Tokenizer]:
    layout = CorpusLayout(cfg.data.corpus_dir)
    tok = Tokenizer(layout.bpe_model(cfg.data.vocab_size))
    norm = FeatureNormalizer.from_file(layout.global_stats)
    d = cfg.data
    spec = SpecAugmentConfig(d.freq_masks, d.freq_mask_width, d.time_masks, d.time_mask_fraction) if d.spec_augment else None
    ds = AsrDataset(tok, norm, d.on_the_fly_features, spec, seed=cfg.train.seed)
    cuts = load_split_cuts(cfg, d.train_splits, d.max_cut_duration)
    sampler = make_sampler(cuts, d.max_duration, shuffle=True, num_buckets=d.num_buckets, seed=cfg.train.seed)
    out = []
    for b in make_loader(ds, sampler, 0):
        out.append(b)
        if len(out) == n:
            break
    return out, tok


def _tick() -> float:
    return time.perf_counter()


def profile_variant(cfg, n_batches: int) -> dict:
    prepare_training_data(cfg.data.corpus_dir, cfg.data.train_splits, cfg.data.vocab_size)
    batches, tok = _batches(cfg, n_batches + 1)
    cfg.model.vocab_size = tok.vocab_size
    cfg.model.blank_id = tok.blank_id
    torch.manual_seed(0)
    model = Transducer.from_config(cfg.model)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    blank = cfg.model.blank_id
    parts = {"enc_fwd": 0.0, "enc_bwd": 0.0, "joint_fwd": 0.0, "joint_bwd": 0.0, "step": 0.0}
    audio_s = 0.0
    shapes = []
    for i, b in enumerate(batches):
        timed = i > 0  # the first batch warms up allocators and kernels
        t0 = _tick()
        enc, enc_lens = model.encode(b["feats"], b["feat_lens"], cfg.train.mode)
        ctc = None
        if model.ctc_head is not None and cfg.model.ctc_weight > 0:
            lp = model.ctc_head(enc).log_softmax(-1).transpose(0, 1)
            ctc = F.ctc_loss(lp, b["tokens"], enc_lens, b["token_lens"], blank=blank, reduction="sum",
                             zero_infinity=True) / b["feats"].shape[0]
        t1 = _tick()
        enc_cut = enc.detach().requires_grad_(True)
        pred = model.predict(add_blank_prefix(b["tokens"], b["token_lens"], blank))
        j = model.joiner
        loss = rnnt_loss_from_joiner(j.project_enc(enc_cut), j.project_pred(pred), j.out.effective_weight(),
                                     j.out.bias, b["tokens"], enc_lens, b["token_lens"], blank=blank)
        t2 = _tick()
        loss.backward()
        t3 = _tick()
        grad = enc_cut.grad
        if ctc is not None:
            torch.autograd.backward([enc, ctc * cfg.model.ctc_weight], [grad, None])
        else:
            enc.backward(grad)
        t4 = _tick()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        t5 = _tick()
        if timed:
            for k, dt in zip(parts, (t1 - t0, t4 - t3, t2 - t1, t3 - t2, t5 - t4)):
                parts[k] += dt
            audio_s += float(b["feat_lens"].sum()) * 0.01
            shapes.append({"B": int(b["feats"].shape[0]), "T_enc": int(enc.shape[1]),
                           "U": int(b["tokens"].shape[1]), "audio_s": round(float(b["feat_lens"].sum()) * 0.01, 1)})
    total = sum(parts.values())
    return {"s_per_step": total / n_batches, "audio_s_per_wall_s": audio_s / total,
            "share": {k: v / total for k, v in parts.items()}, "s_per_step_parts": {k: v / n_batches for k, v in parts.items()},
            "params": model.num_params(), "batches": shapes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batches", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", default="bench/results/train_profile.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    base = load_config(f"conf/{args.preset}.yaml")
    results = {}
    for name in args.variants.split(","):
        cfg = copy.deepcopy(base)
        for key, val in VARIANTS[name].items():
            section, field = key.split(".")
            setattr(getattr(cfg, section), field, val)
        print(f"[{name}] {VARIANTS[name] or 'preset as is'}", flush=True)
        r = profile_variant(cfg, args.batches)
        results[name] = {"overrides": VARIANTS[name], **r}
        print(f"  {r['s_per_step']:.2f} s/step, {r['audio_s_per_wall_s']:.1f} audio-s/s, "
              + ", ".join(f"{k} {v:.0%}" for k, v in r["share"].items()), flush=True)
    write_result(args.out, {"preset": args.preset, "threads": args.threads, "batches": args.batches,
                            "variants": results}, command=" ".join(sys.argv))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
