"""A labelled subset of the training split (``data.train_hours``): the low-resource setting, where a
little transcribed audio meets much untranscribed audio (self-supervised pre-training on all of it).

:func:`labelled_subset` draws utterances speaker by speaker in turn — speakers in a seeded order, each
speaker's utterances in a seeded order — until the subset holds ``hours`` of audio, so every speaker
(engine voice + variant) is represented about equally, and the same ``(cuts, hours, seed)`` always give
the same subset. It only ever picks from the cuts it is given (the train split), which share no
sentence with dev and test.
"""

from __future__ import annotations

import random
from collections import defaultdict

from lhotse import CutSet


def _speaker(cut) -> str:
    sups = cut.supervisions
    return (sups[0].speaker if sups and sups[0].speaker else "") or "?"


def labelled_subset(cuts: CutSet, hours: float, seed: int = 0) -> CutSet:
    """The cuts of a ``hours``-long speaker-balanced subset of ``cuts`` (in their original order);
    all of them when they hold less. ValueError for ``hours <= 0``."""
    if hours <= 0:
        raise ValueError(f"a labelled subset needs hours > 0, got {hours}")
    by_speaker: dict[str, list] = defaultdict(list)
    for c in cuts:
        by_speaker[_speaker(c)].append(c)
    rng = random.Random(f"labelled-subset-{seed}")
    speakers = sorted(by_speaker)
    rng.shuffle(speakers)
    queues = []
    for spk in speakers:
        q = sorted(by_speaker[spk], key=lambda c: c.id)
        rng.shuffle(q)
        queues.append(q)
    budget, total, chosen = hours * 3600.0, 0.0, set()
    while total < budget and any(queues):
        for q in queues:
            if q and total < budget:
                c = q.pop()
                chosen.add(c.id)
                total += c.duration
    return cuts.filter(lambda c: c.id in chosen).to_eager()
