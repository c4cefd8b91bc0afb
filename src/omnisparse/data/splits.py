"""The cuts of a corpus's splits, as a run's config names them: stored-feature manifests, or audio cuts
with ``data.on_the_fly_features``; optionally without the utterances longer than ``max_duration``.
Manifests are read with :func:`omnisparse.data.manifest.read_cuts`: a cut that is damaged or unsafe
to load is left out, logged and counted by reason (into ``report``)."""

from __future__ import annotations

import logging

from lhotse import CutSet

from omnisparse.config import Config
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.manifest import count_problems, read_cuts

log = logging.getLogger(__name__)


def load_split_cuts(cfg: Config, splits: list[str], max_duration: float | None = None,
                    report: dict | None = None) -> CutSet:
    layout = CorpusLayout(cfg.data.corpus_dir)
    sets = []
    for split in splits:
        p = layout.feature_cuts(split) if not cfg.data.on_the_fly_features else layout.cuts(split)
        if not p.exists():
            raise FileNotFoundError(f"no manifest for split {split!r} at {p}; run `omnisparse data prepare --corpus {layout.root}`")
        cuts, problems = read_cuts(p)
        if problems:
            counts = count_problems(problems, report)
            log.warning("%s: skipped %d of its cuts: %s (e.g. %s)", p, len(problems), counts,
                        ", ".join(w for _, w in problems[:3]))
        sets.append(cuts)
    cuts = CutSet.from_cuts(c for s in sets for c in s)
    if len(cuts) == 0:
        raise ValueError(f"no usable utterances in split(s) {splits} of {layout.root} (see the warnings above)")
    if max_duration is not None:
        n = len(cuts)
        cuts = cuts.filter(lambda c: c.duration <= max_duration).to_eager()
        if len(cuts) < n:
            log.warning("skipped %d utterances longer than %.1f s (data.max_cut_duration)", n - len(cuts), max_duration)
            if report is not None:
                report["too_long"] = report.get("too_long", 0) + n - len(cuts)
    return cuts
