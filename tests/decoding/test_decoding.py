import numpy as np
import pytest
import torch
from lhotse import load_manifest

from omnisparse.config import DecodeConfig
from omnisparse.data.batching import AsrDataset
from omnisparse.data.features import fbank
from omnisparse.data.layout import CorpusLayout
from omnisparse.decoding.beam_search import modified_beam_search
from omnisparse.decoding.evaluate import evaluate_cuts, word_error_rate
from omnisparse.decoding.greedy import greedy_search
from omnisparse.decoding.streaming import StreamingFbank, StreamingRecognizer
from omnisparse.export.loading import load_model


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return load_model(tiny_run)


@pytest.fixture(scope="module")
def dev_batch(tiny_corpus, loaded):
    cuts = load_manifest(CorpusLayout(tiny_corpus).feature_cuts("dev")).subset(first=6)
    return AsrDataset(loaded.tokenizer, loaded.normalizer)[cuts]


def _enc(model, b):
    with torch.no_grad():
        return model.encode(b["feats"], b["feat_lens"], mode="stream")


def test_greedy_batch_invariant(loaded, dev_batch):
    m = loaded.model
    enc, lens = _enc(m, dev_batch)
    batched = greedy_search(m, enc, lens)
    for i in range(enc.shape[0]):
        single = greedy_search(m, enc[i:i + 1, : lens[i]], lens[i:i + 1])
        assert single[0] == batched[i]


def test_beam_one_equals_greedy_one_symbol(loaded, dev_batch):
    m = loaded.model
    enc, lens = _enc(m, dev_batch)
    assert modified_beam_search(m, enc, lens, beam=1) == greedy_search(m, enc, lens, max_symbols=1)


def test_beam_search_runs_and_is_valid(loaded, dev_batch):
    m = loaded.model
    enc, lens = _enc(m, dev_batch)
    hyps = modified_beam_search(m, enc, lens, beam=4)
    assert len(hyps) == enc.shape[0]
    assert all(0 < t < loaded.tokenizer.vocab_size for h in hyps for t in h)


@pytest.mark.parametrize("piece", [1, 159, 160, 400, 1234, 5120])
def test_streaming_fbank_equals_offline(tiny_corpus, piece):
    cut = load_manifest(CorpusLayout(tiny_corpus).cuts("dev"))[0]
    x = cut.load_audio()[0].astype(np.float32)
    ref = fbank(x)
    sf = StreamingFbank()
    parts = [sf.accept(x[i:i + piece]) for i in range(0, len(x), piece)] + [sf.finalize()]
    got = torch.cat(parts)
    assert got.shape == ref.shape
    assert torch.allclose(got, ref, atol=1e-3), float((got - ref).abs().max())


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_streaming_recognizer_equals_offline(tiny_corpus, loaded, method):
    import copy

    m = copy.deepcopy(loaded.model)
    with torch.no_grad():  # a barely trained model emits only blanks: make it talk, so the test has teeth
        m.joiner.out.bias[m.config.blank_id] -= 30.0
    cuts = load_manifest(CorpusLayout(tiny_corpus).cuts("dev")).subset(first=4)
    for cut in cuts:
        x = cut.load_audio()[0].astype(np.float32)
        feats = loaded.normalizer(fbank(x))[None]
        with torch.no_grad():
            enc, lens = m.encode(feats, torch.tensor([feats.shape[1]]), mode="stream")
        search = greedy_search(m, enc, lens) if method == "greedy" else modified_beam_search(m, enc, lens, beam=3)
        offline = loaded.tokenizer.decode(search[0])
        rec = StreamingRecognizer(m, loaded.tokenizer, loaded.normalizer, method=method, beam=3)
        step = 2560  # 160 ms pieces
        for i in range(0, len(x), step):
            rec.accept_audio(x[i:i + step])
        assert offline and rec.finalize() == offline


def test_evaluate_cuts_reports_wer(tiny_corpus, loaded):
    cuts = load_manifest(CorpusLayout(tiny_corpus).feature_cuts("dev")).subset(first=8)
    r = evaluate_cuts(loaded.model, cuts, loaded.tokenizer, loaded.normalizer, decode=DecodeConfig(batch_size=3))
    assert r["utterances"] == 8 and len(r["hyps"]) == 8 and r["words"] > 0
    assert 0.0 <= r["wer"]


def test_evaluate_with_a_predictor_window(tiny_corpus, loaded):
    """decode.pred_history longer than any hypothesis decodes exactly as the full history, and the
    model's predictor is left as trained afterwards."""
    cuts = load_manifest(CorpusLayout(tiny_corpus).feature_cuts("dev")).subset(first=6)
    full = evaluate_cuts(loaded.model, cuts, loaded.tokenizer, loaded.normalizer, decode=DecodeConfig(batch_size=3))
    wide = evaluate_cuts(loaded.model, cuts, loaded.tokenizer, loaded.normalizer,
                         decode=DecodeConfig(batch_size=3, pred_history=1000))
    assert [r["hyp"] for r in wide["hyps"]] == [r["hyp"] for r in full["hyps"]]
    assert loaded.model.predictor.history == 0


def test_wer_uses_the_normaliser():
    assert word_error_rate(["Hello, World!"], ["hello world"])["wer"] == 0.0
    assert word_error_rate(["a b c d"], ["a x c"])["wer"] == pytest.approx(0.5)
