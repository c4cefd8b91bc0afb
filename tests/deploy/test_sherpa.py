"""sherpa-onnx export: sherpa_onnx.OnlineRecognizer loads it and streams our model's tokens (frame for
frame, as our PyTorch model decodes in sherpa's window schedule) and transcripts; the graph equals
``Encoder.infer`` run as sherpa runs it (batched streams too); metadata written and checked; bad
exports refused in one line; an LSTM predictor runs as a window over its last tokens, equal to our
decoders with the same ``decode.pred_history``."""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil

import jiwer
import numpy as np
import onnx
import pytest
import torch
from lhotse import load_manifest

from omnisparse.cli import main
from omnisparse.data.features import fbank
from omnisparse.data.layout import CorpusLayout
from omnisparse.deploy.sherpa import SHERPA_FILES, check_sherpa_export, export_sherpa, read_tokens
from omnisparse.deploy.sherpa_run import (SherpaOnnxEncoder, SherpaStreamingRecognizer, check_sherpa, sherpa_recognizer,
                                          sherpa_reference, tail_padding)
from omnisparse.export.loading import load_model
from omnisparse.models.transducer import Transducer

needs_sherpa = pytest.mark.skipif(importlib.util.find_spec("sherpa_onnx") is None,
                                  reason="the sherpa-onnx wheel is not importable (pip install sherpa-onnx)")
N_TEST = 8  # test-clean utterances compared

VARIANTS = {  # model config changes of a random-weight stateless model
    "no_lookahead": {"lookahead": 0, "left_chunks": 1, "pred_context": 2},
    "no_left_context_lookahead2": {"lookahead": 2, "left_chunks": 0, "conv_kernel": 3},
    "no_conv_subsampling8": {"conv_kernel": 0, "subsampling": 8, "chunk_size": 2, "pred_context": 1},
}


@pytest.fixture(scope="module")
def test_audio(tiny_corpus) -> list[np.ndarray]:
    cuts = load_manifest(CorpusLayout(tiny_corpus).cuts("test-clean")).subset(first=N_TEST)
    return [c.load_audio()[0].astype(np.float32) for c in cuts]


@pytest.fixture(scope="module")
def chatty_sherpa(chatty_stateless, tmp_path_factory):
    return export_sherpa(chatty_stateless, tmp_path_factory.mktemp("sherpa") / "chatty")


def sherpa_tokens(out_dir, meta, audio, **kw) -> list[tuple[list[int], list[int]]]:
    """sherpa-onnx's (token ids, frames) per utterance."""
    rec = sherpa_recognizer(out_dir, **kw)
    ids = {p: i for i, p in read_tokens(out_dir / "tokens.txt").items()}
    res = []
    for x in audio:
        s = SherpaStreamingRecognizer(rec, meta)
        for i in range(0, len(x), 1234):
            s.accept_audio(x[i:i + 1234])
        s.finalize()
        res.append(s.tokens(ids))
    return res


def reference_tokens(lm, meta, audio) -> list[tuple[list[int], list[int]]]:
    res = []
    for x in audio:
        padded = np.concatenate([x, np.zeros(tail_padding(len(x), meta), dtype=np.float32)])
        toks, frames, _ = sherpa_reference(lm, padded, meta)
        res.append((toks, frames))
    return res


def random_lm(lm, changes: dict, seed: int = 0):
    """A LoadedModel like ``lm`` holding a random-weight model of another config (blank raised a little)."""
    torch.manual_seed(seed)
    model = Transducer.from_config(dataclasses.replace(lm.model.config, **changes)).eval()
    with torch.no_grad():
        model.joiner.out.bias[model.blank_id] += 0.3
    return dataclasses.replace(lm, model=model)


def edit(out_dir, name: str, set_: dict | None = None, drop: tuple = ()) -> None:
    """In place: change / remove metadata keys of ``out_dir/name``."""
    m = onnx.load(str(out_dir / name))
    props = {p.key: p.value for p in m.metadata_props if p.key not in drop}
    props.update(set_ or {})
    del m.metadata_props[:]
    onnx.helper.set_model_props(m, props)
    onnx.save(m, str(out_dir / name))


# ---------------------------------------------------------------------- sherpa-onnx itself
@needs_sherpa
def test_trained_tiny_cli_export_and_check(tiny_stateless_run, tmp_path, capsys):
    """The trained 30-step stateless model: export-onnx --target sherpa-onnx, then check-onnx runs
    sherpa_onnx.OnlineRecognizer on test-clean against our streaming recognizer."""
    out = tmp_path / "sherpa"
    assert main(["export-onnx", str(tiny_stateless_run), "--out", str(out), "--target", "sherpa-onnx"]) == 0
    assert "encoder.onnx" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(SHERPA_FILES)
    assert not [p for p in tmp_path.iterdir() if p.name != "sherpa"]  # no temporary left behind
    assert main(["check-onnx", str(out), "--split", "test-clean", "--max-utts", str(N_TEST)]) == 0
    text = capsys.readouterr().out
    assert f"sherpa-onnx transcripts equal {N_TEST}/{N_TEST}, tokens and frames equal {N_TEST}/{N_TEST}" in text
    assert float(text.split("encoder max abs diff ")[1].split(";")[0]) < 1e-4


@needs_sherpa
def test_chatty_tokens_frames_and_transcripts(chatty_sherpa, chatty_stateless):
    """A random-weight model emits varied tokens: sherpa's tokens and frames are exactly our model's in
    sherpa's schedule; transcripts equal ours (the model's max_symbols_per_frame on both sides) but for
    the last chunk, where sherpa decodes the silence of the tail padding and ours cuts the look-ahead."""
    r = check_sherpa(chatty_sherpa.path, split="test-clean", max_utts=4)
    K = load_model(chatty_stateless).config.decode.max_symbols_per_frame
    assert r["symbols_per_frame"] == r["max_symbols"] == K > 1
    assert r["utterances"] == r["tokens_equal"] == 4 and r["max_abs_diff"] < 1e-4
    for row in r["rows"]:
        assert len(row["sherpa"].split()) > 3
        assert jiwer.cer(row["torch"], row["sherpa"]) < 0.25


@needs_sherpa
def test_chatty_beam_search_tokens(chatty_sherpa):
    """sherpa-onnx's modified_beam_search (temperature 1) emits our beam search's tokens over the
    frames of its schedule; on this random-weight model near-ties (ONNX vs PyTorch frames differ by
    ~1e-5) may flip one utterance in a few."""
    r = check_sherpa(chatty_sherpa.path, split="test-clean", max_utts=6, method="beam", beam=4)
    assert r["method"] == "beam" and r["beam"] == 4 and r["utterances"] == 6 and r["max_abs_diff"] < 1e-4
    assert r["tokens_equal"] >= 5, [row for row in r["rows"] if not row["tokens_equal"]]
    assert sum(len(row["sherpa"].split()) for row in r["rows"]) > 20  # the random model talks: tokens to compare


@needs_sherpa
def test_batched_streams(chatty_sherpa, test_audio):
    """Several streams decoded together (sherpa stacks the states on dim 0) give each stream's own
    tokens, and the graph at batch 2 equals Encoder.infer."""
    meta = chatty_sherpa.metadata
    alone = sherpa_tokens(chatty_sherpa.path, meta, test_audio[:2])
    rec = sherpa_recognizer(chatty_sherpa.path)
    streams = [rec.create_stream() for _ in range(2)]
    for s, x in zip(streams, test_audio[:2]):
        s.accept_waveform(16000, np.concatenate([x, np.zeros(tail_padding(len(x), meta), np.float32)]))
        s.input_finished()
    while any(rec.is_ready(s) for s in streams):
        rec.decode_streams([s for s in streams if rec.is_ready(s)])
    ids = {p: i for i, p in read_tokens(chatty_sherpa.path / "tokens.txt").items()}
    assert [[ids[t.replace(" ", "\u2581")] for t in rec.tokens(s)] for s in streams] == [a[0] for a in alone]
    assert all(a[0] for a in alone)
    lm = load_model(chatty_sherpa.metadata["source"])
    feats = [fbank(x) for x in test_audio[:2]]
    K = chatty_sherpa.metadata["symbols_per_frame"]
    got = [g[::K] for g in SherpaOnnxEncoder(chatty_sherpa.path)([f.numpy() for f in feats])]
    for f, g in zip(feats, got):
        with torch.no_grad():
            ref, _ = lm.model.infer(lm.normalizer(f)[None], lm.model.init_stream_state(1))
        assert g.shape[0] > 0 and float(np.abs(g - ref[0, :g.shape[0]].numpy()).max()) < 1e-4


@needs_sherpa
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_other_configs(chatty_stateless, test_audio, tmp_path, variant):
    lm = random_lm(load_model(chatty_stateless), VARIANTS[variant])
    res = export_sherpa(lm, tmp_path / "sherpa", compact="rows" if variant.startswith("no_left") else "ffn")
    got = sherpa_tokens(res.path, res.metadata, test_audio[:2])
    assert got == reference_tokens(lm, res.metadata, test_audio[:2])
    assert all(toks for toks, _ in got)


@needs_sherpa
def test_int8(chatty_sherpa, tiny_stateless_run, test_audio, tmp_path, capsys):
    """int8 (onnxruntime dynamic quantisation): smaller, loaded by sherpa-onnx, encoder close to fp32
    PyTorch on the trained model, transcripts equal ours."""
    out = tmp_path / "int8"
    assert main(["export-onnx", str(tiny_stateless_run), "--out", str(out), "--target", "sherpa-onnx",
                 "--dtype", "int8"]) == 0
    assert check_sherpa_export(out)["dtype"] == "int8"
    assert (out / "encoder.onnx").stat().st_size < chatty_sherpa.files["encoder.onnx"]
    lm = load_model(tiny_stateless_run)
    f = fbank(test_audio[0])
    got = SherpaOnnxEncoder(out)([f.numpy()])[0][::check_sherpa_export(out)["symbols_per_frame"]]
    with torch.no_grad():
        ref, _ = lm.model.infer(lm.normalizer(f)[None], lm.model.init_stream_state(1))
    assert got.shape[0] > 0 and float(np.abs(got - ref[0, :got.shape[0]].numpy()).max()) < 0.2
    capsys.readouterr()
    assert main(["check-onnx", str(out), "--split", "test-clean", "--max-utts", "3"]) == 0
    assert "sherpa-onnx transcripts equal 3/3" in capsys.readouterr().out


# ---------------------------------------------------------------------- metadata
def test_metadata(chatty_sherpa, chatty_stateless):
    lm = load_model(chatty_stateless)
    cfg = lm.model.config
    meta = check_sherpa_export(chatty_sherpa.path)
    assert meta == chatty_sherpa.metadata
    C, R, S, d, H = cfg.chunk_size, cfg.lookahead, cfg.subsampling, cfg.d_model, cfg.n_heads
    assert {k: meta[k] for k in ("model_type", "T", "decode_chunk_len", "num_hidden_layers", "hidden_size",
                                 "intermediate_size", "csgu_kernel_size", "left_context_len", "num_heads",
                                 "head_dim")} == {
        "model_type": "ebranchformer", "T": (C + R) * S, "decode_chunk_len": C * S, "num_hidden_layers": cfg.n_layers,
        "hidden_size": d, "intermediate_size": 2 * d, "csgu_kernel_size": cfg.conv_kernel,
        "left_context_len": cfg.left_chunks * C, "num_heads": H, "head_dim": d // H}
    assert meta["source"] == str(chatty_stateless.resolve()) and meta["dtype"] == "fp32"
    dec = onnx.load(str(chatty_sherpa.path / "decoder.onnx"))
    props = {p.key: p.value for p in dec.metadata_props}
    assert (props["vocab_size"], props["context_size"]) == (str(cfg.vocab_size), str(cfg.pred_context))
    assert [i.name for i in dec.graph.input] == ["y"] and len(dec.graph.output) == 1
    enc = onnx.load(str(chatty_sherpa.path / "encoder.onnx"))
    names = [i.name for i in enc.graph.input]
    assert names[:5] == ["x", "cached_key_0", "cached_value_0", "cached_conv_0", "cached_conv_fusion_0"]
    assert names[-1] == "processed_lens" and len(names) == 4 * cfg.n_layers + 2 == len(enc.graph.output)
    tokens = (chatty_sherpa.path / "tokens.txt").read_text().splitlines()
    assert len(tokens) == cfg.vocab_size and tokens[:2] == ["<blk> 0", "<unk> 1"]
    assert tokens[7] == f"{lm.tokenizer.sp.id_to_piece(7)} 7"


@pytest.mark.parametrize("broken, message", [
    (lambda d: edit(d, "encoder.onnx", drop=("model_type",)), "model_type is None"),
    (lambda d: edit(d, "encoder.onnx", {"model_type": "zipformer2"}), "model_type is 'zipformer2'"),
    (lambda d: edit(d, "encoder.onnx", drop=("left_context_len",)), "'left_context_len' is None"),
    (lambda d: edit(d, "encoder.onnx", {"head_dim": "x"}), "'head_dim' is 'x', expected an integer"),
    (lambda d: edit(d, "encoder.onnx", {"num_hidden_layers": "3"}), "means 14 of each"),
    (lambda d: edit(d, "encoder.onnx", {"left_context_len": "4"}), "state input cached_key_0"),
    (lambda d: edit(d, "encoder.onnx", {"merge_conv_kernel": "2"}), "state input cached_conv_fusion_0"),
    (lambda d: edit(d, "encoder.onnx", {"T": "24"}), "expected (N, T=24"),
    (lambda d: edit(d, "encoder.onnx", {"symbols_per_frame": "7"}), "symbols_per_frame) means"),
    (lambda d: edit(d, "decoder.onnx", drop=("context_size",)), "decoder.onnx: metadata 'context_size'"),
    (lambda d: edit(d, "decoder.onnx", {"context_size": "3"}), "one int64 input (N, 3)"),
    (lambda d: edit(d, "decoder.onnx", {"vocab_size": "65"}), "vocab_size=65"),
    (lambda d: (d / "joiner.onnx").unlink(), "joiner.onnx missing"),
    (lambda d: (d / "tokens.txt").write_text("<blk> 0\n"), "tokens.txt: 1 tokens"),
])
def test_broken_exports_refused(chatty_sherpa, tmp_path, capsys, broken, message):
    d = tmp_path / "broken"
    shutil.copytree(chatty_sherpa.path, d)
    broken(d)
    with pytest.raises(ValueError, match=None) as e:
        check_sherpa_export(d)
    assert message in str(e.value) and "\n" not in str(e.value)
    assert main(["check-onnx", str(d)]) == 2  # before sherpa-onnx is ever asked to load it
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@needs_sherpa
def test_symbols_per_frame_repeats_frames(chatty_stateless, test_audio, tmp_path):
    """symbols_per_frame=K: encoder_out holds every frame K times; sherpa-onnx's tokens are our greedy
    search's with max_symbols_per_frame=K (frame for frame) and the chatty model needs K > 1 (K=3
    emits tokens that K=1 cannot)."""
    lm = load_model(chatty_stateless)
    got = {}
    for K in (1, 3):
        res = export_sherpa(lm, tmp_path / f"k{K}", symbols_per_frame=K)
        assert res.metadata["symbols_per_frame"] == K
        enc = SherpaOnnxEncoder(res.path)([fbank(test_audio[0]).numpy()])[0]
        assert enc.shape[0] % K == 0 and np.array_equal(enc[::K], enc[K - 1::K])
        got[K] = sherpa_tokens(res.path, res.metadata, test_audio[:3])
        assert got[K] == reference_tokens(lm, res.metadata, test_audio[:3])
        r = check_sherpa(res.path, split="test-clean", max_utts=3)
        assert r["max_symbols"] == K and r["tokens_equal"] == 3
        for row in r["rows"]:
            assert jiwer.cer(row["torch"], row["sherpa"]) < 0.25
    assert sum(map(len, (t for t, _ in got[3]))) > sum(map(len, (t for t, _ in got[1])))
    with pytest.raises(ValueError, match="symbols_per_frame must be >= 1"):
        export_sherpa(lm, tmp_path / "k0", symbols_per_frame=0)
    assert not (tmp_path / "k0").exists()


def test_lstm_predictor_needs_a_history(tiny_run, tmp_path, capsys):
    assert main(["export-onnx", str(tiny_run), "--out", str(tmp_path / "x"), "--target", "sherpa-onnx"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--pred-history" in err and "LSTM" in err and len(err.splitlines()) == 1
    assert main(["export-onnx", str(tiny_run), "--out", str(tmp_path / "y"), "--pred-history", "4"]) == 2
    assert "applies to --target sherpa-onnx" in capsys.readouterr().err
    assert main(["export-onnx", str(tiny_run), "--out", str(tmp_path / "z"), "--symbols-per-frame", "2"]) == 2
    assert "--symbols-per-frame applies to --target sherpa-onnx" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_stateless_predictor_takes_no_history(chatty_stateless, tmp_path):
    with pytest.raises(ValueError, match="applies to an LSTM predictor"):
        export_sherpa(chatty_stateless, tmp_path / "x", pred_history=4)
    assert not (tmp_path / "x").exists()


@needs_sherpa
def test_lstm_window_tokens_equal_ours(chatty_lstm, test_audio, tmp_path):
    """A random-weight LSTM-predictor model exported with a 3-token window: sherpa-onnx emits exactly
    the tokens and frames of our model decoding with decode.pred_history=3 in sherpa's schedule, and
    the window really truncates (full-history decoding differs somewhere)."""
    res = export_sherpa(chatty_lstm, tmp_path / "lstm", pred_history=3)
    meta = check_sherpa_export(res.path)
    assert meta["pred_type"] == "lstm" and meta["pred_history"] == 3
    dec = onnx.load(str(res.path / "decoder.onnx"))
    assert {p.key: p.value for p in dec.metadata_props}["context_size"] == "3"
    r = check_sherpa(res.path, split="test-clean", max_utts=4)
    assert r["utterances"] == r["tokens_equal"] == 4 and r["max_abs_diff"] < 1e-4
    windowed = sherpa_tokens(res.path, meta, test_audio[:4])
    assert sum(len(toks) for toks, _ in windowed) > 20  # many more tokens than the window holds
    assert reference_tokens(load_model(chatty_lstm), meta, test_audio[:4]) != windowed
