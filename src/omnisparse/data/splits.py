"""The cuts of a corpus's splits, as a run's config names them: stored-feature manifests, or audio cuts
with ``data.on_the_fly_features``; optionally without the utterances longer than ``max_duration``."""

from __future__ import annotations

import logging

from lhotse import CutSet, load_manifest_lazy

from omnisparse.config import Config
from omnisparse.data.layout import CorpusLayout

log = logging.getLogger(__name__)


def load_split_cuts(cfg: Config, splits: list[str], max_duration: float | None = None,
                    report: dict | None = None) -> CutSet:
    layout = CorpusLayout(cfg.data.corpus_dir)
    sets = []
    for split in splits:
        p = layout.feature_cuts(split) if not cfg.data.on_the_fly_features else layout.cuts(split)
        if not p.exists():
            raise FileNotFoundError(f"no manifest for split {split!r} at {p}; run `omnisparse data prepare --corpus {layout.root}`")
        sets.append(load_manifest_lazy(p).to_eager())
    cuts = sets[0] if len(sets) == 1 else CutSet.from_cuts(c for s in sets for c in s)
    if max_duration is not None:
        n = len(cuts)
        cuts = cuts.filter(lambda c: c.duration <= max_duration).to_eager()
        if len(cuts) < n:
            log.warning("skipped %d utterances longer than %.1f s (data.max_cut_duration)", n - len(cuts), max_duration)
            if report is not None:
                report["too_long"] = report.get("too_long", 0) + n - len(cuts)
    return cuts
