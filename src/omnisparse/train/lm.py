"""Training the external token LM (``omnisparse train-lm --config small``): section ``lm``.

Text: :func:`omnisparse.data.lm_text.lm_sentences` (the corpus's train sentence pool, or
``lm.text``), tokenised with the corpus's ``data.vocab_size`` BPE, so the LM's ids are the
recogniser's. Batches: ``lm.batch_sentences`` sentences in a seeded order per epoch (same batches
after a resume), padded; loss: mean cross-entropy per token (``eos`` included, padding excluded);
AdamW with linear warm-up and cosine decay; validation: per-token perplexity of the dev transcripts.
The run directory holds checkpoints (``ckpt-<step>``, safetensors, atomic; the newest ``lm.keep_last``
kept), ``metrics.csv`` + TensorBoard, ``config.json``; resuming continues bit for bit. One process
(the LM is small next to the recogniser); ``lm.threads`` intra-op threads.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from omnisparse.config import Config
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.lm_text import held_out_transcripts, lm_sentences
from omnisparse.data.splits import load_split_cuts
from omnisparse.data.text import normalize_text
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.io import checkpoint as ck
from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.lock import exclusive_dir
from omnisparse.models.lm import TokenLM, pieces_digest
from omnisparse.train.metrics import MetricLogger

log = logging.getLogger(__name__)


def _batches(n: int, size: int, seed: int, epoch: int) -> list[np.ndarray]:
    order = np.random.default_rng([seed, 7, epoch]).permutation(n)
    return [order[i:i + size] for i in range(0, n, size)]


def _pad(seqs: list[list[int]], bos_eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[bos] + s`` inputs and ``s + [eos]`` targets, padded with -100 targets: ``(B, U+1)`` each."""
    width = max(len(s) for s in seqs) + 1
    x = torch.full((len(seqs), width), bos_eos, dtype=torch.int64)
    y = torch.full((len(seqs), width), -100, dtype=torch.int64)
    for i, s in enumerate(seqs):
        x[i, 1:len(s) + 1] = torch.tensor(s, dtype=torch.int64)
        y[i, :len(s) + 1] = torch.tensor([*s, bos_eos], dtype=torch.int64)
    return x, y


@torch.no_grad()
def perplexity(lm: TokenLM, seqs: list[list[int]], batch: int = 256) -> float:
    """Per-token perplexity (``eos`` counted) of ``seqs`` under ``lm``."""
    was = lm.training
    lm.eval()
    nll, n = 0.0, 0
    for i in range(0, len(seqs), batch):
        x, y = _pad(seqs[i:i + batch], lm.bos_eos)
        logits = lm(x)
        nll += float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction="sum"))
        n += int((y != -100).sum())
    lm.train(was)
    return math.exp(nll / max(n, 1))


def _lr(step: int, c) -> float:
    if step < c.warmup_steps:
        return c.lr * (step + 1) / c.warmup_steps
    frac = (step - c.warmup_steps) / max(1, c.max_steps - c.warmup_steps)
    return c.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, frac)))


def train_lm(cfg: Config, resume: bool = True) -> dict[str, Any]:
    """Train (or resume) the LM of ``cfg.lm`` into ``cfg.lm.out_dir``; ``{step, checkpoint, dev_ppl}``."""
    c = cfg.lm
    out = Path(c.out_dir)
    if c.threads:
        torch.set_num_threads(c.threads)
    layout = CorpusLayout(cfg.data.corpus_dir)
    bpe = layout.bpe_model(cfg.data.vocab_size)
    if not bpe.exists():
        raise FileNotFoundError(f"no tokenizer {bpe}: run `omnisparse data prepare --corpus {layout.root}` first")
    tok = Tokenizer(bpe)
    with exclusive_dir(out, "omnisparse train-lm"):
        sentences = lm_sentences(cfg.data.corpus_dir, c.text)
        seqs = [s for s in tok.encode_batch(sentences) if s]
        held = held_out_transcripts(cfg.data.corpus_dir, tuple(cfg.data.train_splits))
        dev_texts = [normalize_text(" ".join(s.text or "" for s in cut.supervisions))
                     for cut in load_split_cuts(cfg, [cfg.data.dev_split])]
        dev = [s for s in tok.encode_batch(dev_texts) if s]
        torch.manual_seed(c.seed)
        lm = TokenLM(tok.vocab_size, c.embed_dim, c.hidden_dim, c.num_layers, c.dropout, tok.blank_id)
        opt = torch.optim.AdamW(lm.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        arch = {"vocab_size": tok.vocab_size, "embed_dim": c.embed_dim, "hidden_dim": c.hidden_dim,
                "num_layers": c.num_layers, "dropout": c.dropout, "bos_eos": tok.blank_id,
                "pieces_sha256": pieces_digest(tok)}
        step, epoch, pos = 0, 0, 0
        found = ck.latest_checkpoint(out) if resume and out.exists() else None
        if found is not None:
            path, state = found
            if state.get("kind") != "lm" or state.get("lm") != arch:
                raise ck.CheckpointError(f"{out} holds another model than this lm config ({path.name}): "
                                         f"use another --lm.out_dir or --no-resume")
            ck.load_weights(lm, path)
            ck.load_optimizer(opt, path, state)
            ck.set_rng_state(state["rng"])
            step, epoch, pos = state["step"], state["epoch"], state["pos"]
            log.info("resuming the LM at step %d from %s", step, path)
        atomic_write_text(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
        logger = MetricLogger(out)
        logger.truncate_after(step)
        info = {"sentences": len(seqs), "tokens": sum(len(s) + 1 for s in seqs), "dev_sentences": len(dev),
                "held_out_in_text": len(held & set(sentences))}
        log.info("LM text: %(sentences)d sentences, %(tokens)d tokens; dev: %(dev_sentences)d", info)

        def save() -> Path:
            state = {"kind": "lm", "lm": arch, "epoch": epoch, "pos": pos, "rng": ck.rng_state(), "text": info,
                     "config": cfg.to_dict()}
            return ck.save_checkpoint(out, step, lm, state, opt, extra_files={"tokenizer.model": bpe.read_bytes()},
                                      keep_last=c.keep_last)

        lm.train()
        bar = tqdm(total=c.max_steps, initial=step, desc="train-lm", dynamic_ncols=True)
        dev_ppl, t0 = None, time.time()
        batches = _batches(len(seqs), c.batch_sentences, c.seed, epoch)
        while step < c.max_steps:
            if pos >= len(batches):
                epoch, pos = epoch + 1, 0
                batches = _batches(len(seqs), c.batch_sentences, c.seed, epoch)
            x, y = _pad([seqs[i] for i in batches[pos]], tok.blank_id)
            for g in opt.param_groups:
                g["lr"] = _lr(step, c)
            logits = lm(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(lm.parameters(), c.grad_clip)
            opt.step()
            step, pos = step + 1, pos + 1
            bar.update(1)
            if step % c.log_every == 0:
                logger.log(step, epoch=epoch, loss=loss.item(), lr=opt.param_groups[0]["lr"],
                           wall_s=round(time.time() - t0, 2))
                bar.set_postfix(loss=f"{loss.item():.3f}")
            if step % c.valid_every == 0 or step == c.max_steps:
                dev_ppl = perplexity(lm, dev)
                logger.log(step, dev_ppl=dev_ppl)
                log.info("LM step %d: dev perplexity %.3f per token", step, dev_ppl)
            if step % c.ckpt_every == 0 or step == c.max_steps:
                save()
        bar.close()
        logger.close()
        final = ck.latest_checkpoint(out)
        if dev_ppl is None and dev:
            dev_ppl = perplexity(lm, dev)
        return {"step": step, "checkpoint": str(final[0]) if final else None, "dev_ppl": dev_ppl, **info}
