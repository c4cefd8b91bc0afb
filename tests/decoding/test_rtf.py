"""audio_rtf / recognizer_rtf: the one chunk-feeding real-time-factor loop (no model: a fake recogniser)."""

from __future__ import annotations

import numpy as np
import torch

from omnisparse.decoding.streaming import audio_rtf, recognizer_rtf


class Counting:
    """Records the piece sizes it is fed; its text is the number of samples seen."""

    def __init__(self):
        self.pieces: list[int] = []

    def accept_audio(self, samples: np.ndarray) -> str:
        self.pieces.append(len(samples))
        return ""

    def finalize(self) -> str:
        return str(sum(self.pieces))


class FakeCut:
    def __init__(self, cut_id: str, n: int):
        self.id, self.n = cut_id, n

    def load_audio(self) -> np.ndarray:
        return np.zeros((1, self.n), dtype=np.float64)


def test_audio_rtf_feeds_pieces_and_reports_every_utterance_in_order():
    seen = []
    before = torch.get_num_threads()
    r = audio_rtf(Counting, [("b", np.zeros(16000, np.float32)), ("a", np.zeros(8000, np.float32))], 6000,
                  threads=1, on_final=lambda uid, x, rec, text: seen.append((uid, len(x), rec.pieces, text)))
    assert torch.get_num_threads() == before
    assert list(r["hyps"].items()) == [("b", "16000"), ("a", "8000")]
    assert seen == [("b", 16000, [6000, 6000, 4000], "16000"), ("a", 8000, [6000, 2000], "8000")]
    assert r["utterances"] == 2 and r["threads"] == 1 and r["audio_s"] == 1.5
    assert r["compute_s"] >= 0 and r["rtf"] == r["compute_s"] / 1.5


def test_recognizer_rtf_takes_the_first_n_cuts_as_float32():
    got = []
    r = recognizer_rtf(Counting, [FakeCut("x", 3200), FakeCut("y", 1600), FakeCut("z", 800)], 2, 1000,
                       on_final=lambda uid, x, rec, text: got.append(x.dtype))
    assert r["hyps"] == {"x": "3200", "y": "1600"} and abs(r["audio_s"] - 0.3) < 1e-12
    assert got == [np.float32, np.float32]
