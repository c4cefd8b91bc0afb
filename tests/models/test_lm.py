"""The token LM: incremental steps equal the teacher-forced forward; it is tied to its tokenizer."""

import pytest
import torch

from omnisparse.io.checkpoint import CheckpointError
from omnisparse.models.lm import TokenLM, load_token_lm, pieces_digest


def test_steps_equal_the_teacher_forced_forward():
    torch.manual_seed(0)
    lm = TokenLM(20, 8, 16, 2, dropout=0.0).eval()
    ids = [3, 7, 1, 19, 5]
    with torch.no_grad():
        full = lm(torch.tensor([[0, *ids]]))[0].log_softmax(-1)  # (U+1, V)
    lp, st = lm.start(2)  # a batch of two identical sentences: rows must not mix
    steps = [lp[0]]
    for t in ids:
        lp, st = lm.step(torch.tensor([t, t]), st)
        assert torch.allclose(lp[0], lp[1])
        steps.append(lp[0])
    assert torch.allclose(torch.stack(steps), full, atol=1e-5)
    assert lm.sentence_log_prob(ids) == pytest.approx(float(sum(full[i, t] for i, t in enumerate([*ids, 0]))), abs=1e-4)


def test_pieces_digest_tells_tokenizers_apart_and_a_non_lm_is_refused(tmp_path):
    class Pieces:
        def __init__(self, pieces):
            self.sp = type("SP", (), {"id_to_piece": lambda _, i: pieces[i], "get_piece_size": lambda _: len(pieces)})()

    assert pieces_digest(Pieces(["<blk>", "a"])) != pieces_digest(Pieces(["<blk>", "b"]))
    assert pieces_digest(Pieces(["<blk>", "a"])) == pieces_digest(Pieces(["<blk>", "a"]))
    with pytest.raises(FileNotFoundError):
        load_token_lm(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        load_token_lm(tmp_path)


def test_a_recogniser_checkpoint_is_not_an_lm(tiny_run):
    with pytest.raises(CheckpointError, match="not a language-model checkpoint"):
        load_token_lm(tiny_run)
