"""On-disk layout of a corpus directory (the default corpus and prepared LibriSpeech alike)::

    CORPUS/
      audio/<split>/<utt_id>.flac          synthesised audio (default corpus only)
      manifests/recordings_<split>.jsonl.gz  lhotse RecordingSet
      manifests/supervisions_<split>.jsonl.gz lhotse SupervisionSet
      manifests/cuts_<split>.jsonl.gz        lhotse CutSet (audio cuts)
      fbank/cuts_<split>.jsonl.gz            CutSet with stored 80-dim fbank features
      fbank/feats_<split>/...                lhotse feature storage (lilcom chunky)
      fbank/global_stats.json                per-dim mean / std over train features
      lang/bpe_<V>.model                     sentencepiece model (V pieces, <blk> = id 0)
"""

from __future__ import annotations

from pathlib import Path


class CorpusLayout:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def manifests(self) -> Path:
        return self.root / "manifests"

    @property
    def fbank(self) -> Path:
        return self.root / "fbank"

    @property
    def lang(self) -> Path:
        return self.root / "lang"

    def audio_dir(self, split: str) -> Path:
        return self.root / "audio" / split

    def recordings(self, split: str) -> Path:
        return self.manifests / f"recordings_{split}.jsonl.gz"

    def supervisions(self, split: str) -> Path:
        return self.manifests / f"supervisions_{split}.jsonl.gz"

    def cuts(self, split: str) -> Path:
        return self.manifests / f"cuts_{split}.jsonl.gz"

    def feature_cuts(self, split: str) -> Path:
        return self.fbank / f"cuts_{split}.jsonl.gz"

    def feature_storage(self, split: str) -> Path:
        return self.fbank / f"feats_{split}"

    @property
    def global_stats(self) -> Path:
        return self.fbank / "global_stats.json"

    def bpe_model(self, vocab_size: int) -> Path:
        return self.lang / f"bpe_{vocab_size}.model"

    def splits(self) -> list[str]:
        """Splits that have a cuts manifest, sorted."""
        return sorted(p.name[len("cuts_"):-len(".jsonl.gz")] for p in self.manifests.glob("cuts_*.jsonl.gz"))
