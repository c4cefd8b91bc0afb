"""SentencePiece BPE tokenizer with the RNN-T blank at id 0.

Piece ids: 0 = ``<blk>`` (the transducer blank, never produced by ``encode``), 1 = ``<unk>``,
2.. = BPE pieces. ``vocab_size`` counts all of them, so the joiner has ``vocab_size`` outputs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Iterable

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2


BLANK_ID = 0


class Tokenizer:
    def __init__(self, model_path: str | Path):
        model_path = Path(model_path)
        if not model_path.exists():
            raise FileNotFoundError(f"tokenizer model not found: {model_path}")
        self.model_path = model_path
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))
        if self.sp.id_to_piece(BLANK_ID) != "<blk>":
            raise ValueError(f"{model_path}: id 0 is {self.sp.id_to_piece(0)!r}, expected '<blk>' (not an omnisparse tokenizer)")

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.sp.encode(texts, out_type=int)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([int(i) for i in ids if int(i) != BLANK_ID])

    def model_bytes(self) -> bytes:
        return self.model_path.read_bytes()

    def fingerprint(self) -> str:
        """sha256 of what decides encoding and decoding (pieces, scores, normaliser, training settings),
        without where it was trained: two builds of the same corpus on two machines are the same
        tokenizer even when their files name other temporary paths."""
        return hashlib.sha256(_without_paths(self.model_bytes())).hexdigest()


def _without_paths(model: bytes) -> bytes:
    """The serialised sentencepiece model with the trainer's input and output paths cleared."""
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    del proto.trainer_spec.input[:]
    proto.trainer_spec.model_prefix = ""
    return proto.SerializeToString(deterministic=True)


def train_tokenizer(texts: Iterable[str], model_path: str | Path, vocab_size: int = 256,
                    model_type: str = "bpe") -> Tokenizer:
    """Train a BPE model on normalised transcripts and write it atomically to ``model_path``.

    ``vocab_size`` includes ``<blk>`` and ``<unk>``. Raises ValueError if the text is too small to
    support that many pieces (sentencepiece's own message is kept in the error).
    """
    model_path = Path(model_path)
    model_path.parent.mkdir(parents=True, exist_ok=True)
    texts = [t for t in texts if t and t.strip()]
    if not texts:
        raise ValueError("cannot train a tokenizer: no non-empty transcripts")
    with tempfile.TemporaryDirectory(dir=model_path.parent) as tmp:
        txt = Path(tmp) / "text.txt"
        txt.write_text("\n".join(texts) + "\n")
        prefix = Path(tmp) / "bpe"
        try:
            spm.SentencePieceTrainer.train(
                input=str(txt), model_prefix=str(prefix), vocab_size=vocab_size, model_type=model_type,
                character_coverage=1.0, pad_id=0, pad_piece="<blk>", unk_id=1, bos_id=-1, eos_id=-1,
                input_sentence_size=2_000_000, shuffle_input_sentence=True, num_threads=max(1, os.cpu_count() or 1),
                minloglevel=2,
            )
        except RuntimeError as e:
            raise ValueError(f"sentencepiece could not train a {vocab_size}-piece model: {e}") from e
        Path(f"{prefix}.model").write_bytes(_without_paths(Path(f"{prefix}.model").read_bytes()))
        os.replace(f"{prefix}.model", model_path)
    return Tokenizer(model_path)
