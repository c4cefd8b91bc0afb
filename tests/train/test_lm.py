"""omnisparse train-lm on the tiny corpus, and the LM fused into beam search."""

import json

import pytest
import torch
from lhotse import load_manifest
from safetensors.torch import load_file

from omnisparse.cli import main as cli_main
from omnisparse.config import DecodeConfig, load_config
from omnisparse.data.batching import AsrDataset
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.lm_text import held_out_transcripts, lm_sentences
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.decoding.beam_search import modified_beam_search
from omnisparse.decoding.evaluate import evaluate_cuts, fusion_lm
from omnisparse.decoding.streaming import StreamingRecognizer
from omnisparse.export.loading import load_model
from omnisparse.io.checkpoint import CheckpointError
from omnisparse.models.lm import load_token_lm
from omnisparse.train.lm import perplexity, train_lm


def _cfg(corpus, out, *extra):
    return load_config("tiny", [f"--data.corpus_dir={corpus}", f"--lm.out_dir={out}", *extra])


@pytest.fixture(scope="module")
def lm_run(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("lm") / "lm"
    train_lm(_cfg(tiny_corpus, out, "--lm.max_steps=30", "--lm.hidden_dim=48", "--lm.lr=1e-2"))
    return out


def test_lm_text_is_the_train_pool_without_any_dev_or_test_sentence(tiny_corpus, tmp_path):
    pool = lm_sentences(tiny_corpus)
    train = {" ".join(s.text for s in c.supervisions) for c in load_manifest(CorpusLayout(tiny_corpus).cuts("train"))}
    assert train <= set(pool) and len(pool) > len(train)  # every spoken train sentence, and unspoken ones
    assert not held_out_transcripts(tiny_corpus) & set(pool)
    text = tmp_path / "extra.txt"
    held = sorted(held_out_transcripts(tiny_corpus))[:3]
    text.write_text("Hello, World!\n\n" + "\n".join(h.upper() for h in held) + "\n")
    assert lm_sentences(tiny_corpus, text) == ["hello world"]  # normalised; dev/test sentences purged


def test_lm_learns_and_resumes_bitwise(tiny_corpus, lm_run, tmp_path):
    out = json.loads((lm_run / "config.json").read_text())
    assert out["lm"]["max_steps"] == 30
    lm = load_token_lm(lm_run)
    fresh = type(lm)(lm.vocab_size, 16, 48, 1, 0.0, lm.bos_eos).eval()
    tokenizer = Tokenizer(CorpusLayout(tiny_corpus).bpe_model(load_config("tiny").data.vocab_size))
    dev = [tokenizer.encode(t) for t in sorted(held_out_transcripts(tiny_corpus))[:40]]
    assert perplexity(lm, dev) < 0.8 * perplexity(fresh, dev)  # it learned something about English
    # interrupted after its step-20 checkpoint, resumed: the same weights as straight through
    cfg = _cfg(tiny_corpus, tmp_path / "b", "--lm.max_steps=30", "--lm.hidden_dim=48", "--lm.lr=1e-2")
    calls = {"n": 0}
    orig = torch.optim.AdamW.step

    def boom(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 21:
            raise KeyboardInterrupt
        return orig(self, *a, **k)

    torch.optim.AdamW.step = boom
    try:
        with pytest.raises(KeyboardInterrupt):
            train_lm(cfg)
    finally:
        torch.optim.AdamW.step = orig
    train_lm(cfg)
    a = load_file(str(lm_run / "ckpt-00000030" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "ckpt-00000030" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(CheckpointError, match="another model"):
        train_lm(_cfg(tiny_corpus, tmp_path / "b", "--lm.max_steps=40", "--lm.hidden_dim=64"))


def test_fusion_at_scale_0_is_plain_beam_search_and_changes_it_above(tiny_corpus, tiny_run, lm_run):
    asr = load_model(tiny_run)
    lm = load_token_lm(lm_run, asr.tokenizer)
    cuts = load_manifest(CorpusLayout(tiny_corpus).feature_cuts("dev")).subset(first=6)
    b = AsrDataset(asr.tokenizer, asr.normalizer)[cuts]
    with torch.no_grad():
        enc, lens = asr.model.encode(b["feats"], b["feat_lens"], mode="stream")
    plain = modified_beam_search(asr.model, enc, lens, 4)
    assert modified_beam_search(asr.model, enc, lens, 4, lm, 0.0) == plain  # weight 0: the LM is not consulted
    # the reward per token lengthens the fused hypotheses (fusion alone favours deletions)
    short = modified_beam_search(asr.model, enc, lens, 4, lm, 0.5, token_bonus=0.0)
    long = modified_beam_search(asr.model, enc, lens, 4, lm, 0.5, token_bonus=5.0)
    assert sum(map(len, long)) > sum(map(len, short))
    # an LM that wants one token above all: a large weight makes the search emit it
    with torch.no_grad():
        lm.out.bias[5] += 50.0
    biased = modified_beam_search(asr.model, enc, lens, 4, lm, 5.0)
    assert sum(h.count(5) for h in biased) > sum(h.count(5) for h in plain)


def test_fused_streaming_equals_fused_whole_utterance(tiny_corpus, tiny_run, lm_run):
    asr = load_model(tiny_run)
    lm = load_token_lm(lm_run, asr.tokenizer)
    cut = next(iter(load_manifest(CorpusLayout(tiny_corpus).cuts("dev"))))
    x = cut.load_audio()[0]
    rec = StreamingRecognizer(asr.model, asr.tokenizer, asr.normalizer, method="beam", lm=lm, lm_scale=0.5)
    step = asr.model.encoder.frames_per_chunk * 160
    for i in range(0, len(x), step):
        rec.accept_audio(x[i:i + step])
    whole = StreamingRecognizer(asr.model, asr.tokenizer, asr.normalizer, method="beam", lm=lm, lm_scale=0.5)
    whole.accept_audio(x)
    assert rec.finalize() == whole.finalize()
    with pytest.raises(ValueError, match="beam"):
        StreamingRecognizer(asr.model, asr.tokenizer, asr.normalizer, method="greedy", lm=lm)


def test_eval_and_transcribe_with_an_lm(tiny_corpus, tiny_run, lm_run, tmp_path, capsys):
    asr = load_model(tiny_run)
    cuts = load_manifest(CorpusLayout(tiny_corpus).feature_cuts("dev")).subset(first=4)
    dec = DecodeConfig(method="beam", lm=str(lm_run), lm_scale=0.3)
    assert evaluate_cuts(asr.model, cuts, asr.tokenizer, asr.normalizer, decode=dec)["utterances"] == 4
    with pytest.raises(ValueError, match="needs decode.method=beam"):
        fusion_lm(DecodeConfig(method="greedy", lm=str(lm_run)), asr.tokenizer)
    wav = CorpusLayout(tiny_corpus).audio_dir("dev")
    audio = str(next(wav.rglob("*.flac"), None) or next(wav.rglob("*.wav")))
    assert cli_main(["transcribe", str(tiny_run), audio, "--method", "beam", "--lm", str(lm_run), "--stream"]) == 0
    assert audio in capsys.readouterr().out
    assert cli_main(["transcribe", str(tiny_run), audio, "--lm", str(lm_run)]) == 2  # greedy + LM: one line
    assert "needs decode.method=beam" in capsys.readouterr().err


def test_token_bonus_without_an_lm_lengthens_plain_beam_search(tiny_corpus, tiny_run):
    asr = load_model(tiny_run)
    cuts = load_manifest(CorpusLayout(tiny_corpus).feature_cuts("dev")).subset(first=6)
    b = AsrDataset(asr.tokenizer, asr.normalizer)[cuts]
    with torch.no_grad():
        enc, lens = asr.model.encode(b["feats"], b["feat_lens"], mode="stream")
    plain = modified_beam_search(asr.model, enc, lens, 4)
    assert sum(map(len, modified_beam_search(asr.model, enc, lens, 4, token_bonus=5.0))) > sum(map(len, plain))
    # the config picks the plain bonus without an LM and the LM's with one
    from omnisparse.decoding.evaluate import beam_token_bonus

    dec = DecodeConfig(method="beam", token_bonus=0.5, lm_token_bonus=1.5, lm_scale=0.2)
    assert beam_token_bonus(dec, None) == 0.5 and beam_token_bonus(dec, object()) == 1.5
    dec.lm_scale = 0.0
    assert beam_token_bonus(dec, object()) == 0.5
