from lhotse import load_manifest

from omnisparse.data.layout import CorpusLayout
from omnisparse.data.tokenizer import BLANK_ID, Tokenizer


def test_round_trip_and_blank(tiny_corpus):
    tok = Tokenizer(CorpusLayout(tiny_corpus).bpe_model(64))
    assert tok.vocab_size == 64 and tok.blank_id == BLANK_ID == 0
    texts = [s.text for c in load_manifest(CorpusLayout(tiny_corpus).cuts("dev")) for s in c.supervisions]
    for t in texts:
        ids = tok.encode(t)
        assert ids and BLANK_ID not in ids
        assert tok.decode(ids) == t
    assert tok.decode([0, *tok.encode("hello world"), 0]) == "hello world"


def test_rejects_foreign_model(tmp_path):
    import pytest
    import sentencepiece as spm

    (tmp_path / "t.txt").write_text("a b c d e f g\n" * 50)
    spm.SentencePieceTrainer.train(input=str(tmp_path / "t.txt"), model_prefix=str(tmp_path / "m"), vocab_size=12,
                                   minloglevel=2)
    with pytest.raises(ValueError, match="blk"):
        Tokenizer(tmp_path / "m.model")
