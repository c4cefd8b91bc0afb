"""From audio manifests to training-ready data: fbank features, global statistics, BPE tokenizer."""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path

from omnisparse.data.features import PREPARE_COMMAND, compute_global_stats, prepare_features
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.manifest import read_cuts
from omnisparse.data.text import normalize_text
from omnisparse.data.tokenizer import Tokenizer, train_tokenizer
from omnisparse.io.lock import exclusive_dir

log = logging.getLogger(__name__)


def ensure_tokenizer(corpus_dir: str | Path, train_splits: list[str], vocab_size: int) -> Tokenizer:
    layout = CorpusLayout(corpus_dir)
    path = layout.bpe_model(vocab_size)
    if path.exists():
        return Tokenizer(path)
    texts = []
    for split in train_splits:
        src = layout.cuts(split)
        if not src.exists():
            raise FileNotFoundError(f"missing manifest {src}")
        for cut in read_cuts(src)[0]:
            for s in cut.supervisions:
                t = normalize_text(s.text or "")
                if t:
                    texts.append(t)
    tok = train_tokenizer(texts, path, vocab_size=vocab_size)
    log.info("trained %d-piece BPE on %d transcripts -> %s", vocab_size, len(texts), path)
    return tok


def prepare_training_data(corpus_dir: str | Path, train_splits: list[str], vocab_size: int,
                          num_jobs: int | None = None, max_duration: float = float("inf")) -> dict:
    """Idempotent: features for every split, global stats over ``train_splits``, tokenizer. What is
    missing is written under the corpus directory's lock (see :func:`prepare_features`)."""
    layout = CorpusLayout(corpus_dir)
    reports = prepare_features(corpus_dir, num_jobs=num_jobs, max_duration=max_duration)
    missing = not (layout.global_stats.exists() and layout.bpe_model(vocab_size).exists())
    with exclusive_dir(layout.root, PREPARE_COMMAND) if missing else nullcontext():  # one writer, as for the features
        if not layout.global_stats.exists():
            compute_global_stats(corpus_dir, train_splits)
        tok = ensure_tokenizer(corpus_dir, train_splits, vocab_size)
    info = {"splits": layout.splits(), "tokenizer": str(tok.model_path), "vocab_size": tok.vocab_size,
            "validation": {k: v.to_dict() for k, v in reports.items()}}
    return json.loads(json.dumps(info))
