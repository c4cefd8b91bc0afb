"""Fuzzing with hypothesis: the text normaliser, the tokenizer, feature extraction and ``transcribe``
on random text, arrays and files. Bounded: a fixed number of examples each, no deadline (a shared CPU
makes per-example timing meaningless), the whole file well under a minute on one thread once the
session's tiny corpus and model exist. ``derandomize=True``: the same examples in every CI run.
"""

from __future__ import annotations

import io
import re
import string
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from omnisparse.cli import main
from omnisparse.data.features import MIN_SAMPLES, NUM_MEL_BINS, fbank
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.text import normalize_text
from omnisparse.data.tokenizer import BLANK_ID, Tokenizer
from omnisparse.utils.faults import DAMAGES, damage_file

FAST = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
SLOW = settings(FAST, max_examples=20)  # one model call per example

NORMALISED = re.compile(r"[a-z]+(?:'[a-z]+)*(?: [a-z]+(?:'[a-z]+)*)*")

# text that exercises the normaliser's rules: digits, money, ordinals, titles, accents, quotes, dashes
RULE_TEXT = st.lists(st.sampled_from(["1", "21st", "3.5", "$5", "%", "&", "1980s", "mr", "Dr.", "etc", "o'clock",
                                      "don't", "'", "-", "\u2019", "\u2014", "caf\u00e9", "\u00df", "\u6771",
                                      ".", ",", " ", "007", "1,984", "x", "IV"]), max_size=12).map("".join)


# ---------------------------------------------------------------------------------------------- normaliser

@FAST
@given(st.one_of(st.text(max_size=80), RULE_TEXT))
def test_normaliser_output_is_in_its_alphabet_and_idempotent(s):
    out = normalize_text(s)
    if out is None:
        return
    assert NORMALISED.fullmatch(out), out
    assert normalize_text(out) == out  # references are normalised again at scoring time


# ---------------------------------------------------------------------------------------------- tokenizer

@pytest.fixture(scope="module")
def tokenizer(tiny_corpus) -> Tokenizer:
    return Tokenizer(CorpusLayout(tiny_corpus).bpe_model(64))


@FAST
@given(st.one_of(st.text(alphabet=string.ascii_lowercase + "' ", max_size=80), RULE_TEXT, st.text(max_size=40)))
def test_tokenizer_round_trips_normalised_text(tokenizer, s):
    text = normalize_text(s)
    assume(text is not None)
    ids = tokenizer.encode(text)
    assert ids and all(0 < i < tokenizer.vocab_size for i in ids)  # never the blank, never out of range
    assert tokenizer.decode(ids) == text


@FAST
@given(st.text(max_size=40), st.lists(st.integers(-5, 200), max_size=30))
def test_tokenizer_never_crashes_on_raw_text_or_random_ids(tokenizer, s, ids):
    assert all(i != BLANK_ID for i in tokenizer.encode(s))
    ok = [i for i in ids if 0 <= i < tokenizer.vocab_size]
    assert isinstance(tokenizer.decode(ok), str)


# ---------------------------------------------------------------------------------------------- features

@FAST
@given(hnp.arrays(np.float32, st.integers(MIN_SAMPLES, 4000),
                  elements=st.floats(-1.0, 1.0, width=32, allow_nan=False)))
def test_fbank_of_any_finite_signal_is_finite_and_sized(x):
    f = fbank(x)
    n = x.shape[0]
    assert f.shape == ((n + 80) // 160, NUM_MEL_BINS)  # 10 ms frames, centred (snip_edges=False)
    assert bool(f.isfinite().all())


@FAST
@given(hnp.arrays(np.float64, st.integers(0, 3000),
                  elements=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.just(np.nan))),
       st.sampled_from(["as_is", "stereo", "column"]))
def test_fbank_gives_a_clear_error_or_finite_features(x, layout):
    """Any float64 values (NaN, inf, 1e308, subnormals), any length, mono or not: finite features of the
    right width or a ValueError that says what is wrong, nothing else."""
    if layout == "stereo":
        x = np.stack([x, x])
    elif layout == "column":
        x = x[:, None]
    try:
        f = fbank(x)
    except ValueError as e:
        assert re.search(r"mono|too short|NaN or infinite|not finite", str(e)), e
        return
    assert f.shape[1] == NUM_MEL_BINS and bool(f.isfinite().all())


# ---------------------------------------------------------------------------------------------- transcribe

def _transcribe(model: Path, path: Path, capsys) -> tuple[int, list[str], list[str]]:
    capsys.readouterr()
    rc = main(["transcribe", str(model), str(path)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    errors = [line for line in cap.err.splitlines() if line.startswith("omnisparse: error")]
    outputs = [line for line in cap.out.splitlines() if line.startswith(f"{path}\t")]
    return rc, errors, outputs


def _check_one_result(rc, errors, outputs, path):
    """Either a transcript line and exit 0, or exactly one error line naming the file and exit 1."""
    if rc == 0:
        assert outputs and not errors
    else:
        assert rc == 1 and not outputs and len(errors) == 1 and str(path) in errors[0], (rc, errors)


@SLOW
@given(st.binary(max_size=2048), st.sampled_from([".wav", ".flac", ".mp3", ".ogg", ""]))
def test_transcribe_random_bytes(tiny_run, tmp_path, capsys, blob, suffix):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(blob)
    rc, errors, outputs = _transcribe(tiny_run, path, capsys)
    assert rc == 1  # random bytes are never audio
    _check_one_result(rc, errors, outputs, path)


@SLOW
@given(st.sampled_from([8000, 11025, 16000, 22050, 48000]), st.integers(1, 3), st.integers(0, 6000),
       st.sampled_from(["noise", "silence", "nan", "inf", "huge"]), st.sampled_from(["WAV", "FLAC"]), st.integers(0, 2**32 - 1))
def test_transcribe_odd_but_valid_files(tiny_run, tmp_path, capsys, rate, channels, frames, content, fmt, seed):
    """Real audio containers with odd contents: any rate, 1-3 channels, 0..6000 frames, NaN / inf /
    huge float samples (WAV float) or silence."""
    assume(fmt == "WAV" or content in ("noise", "silence"))  # FLAC holds integers only
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (frames, channels))
    if content == "silence":
        x[:] = 0
    elif frames and content in ("nan", "inf", "huge"):
        x[rng.integers(0, frames), 0] = {"nan": np.nan, "inf": np.inf, "huge": 3e38}[content]
    subtype = "FLOAT" if fmt == "WAV" else "PCM_16"
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), rate, format=fmt, subtype=subtype)
    path = tmp_path / f"odd.{fmt.lower()}"
    path.write_bytes(buf.getvalue())
    rc, errors, outputs = _transcribe(tiny_run, path, capsys)
    _check_one_result(rc, errors, outputs, path)
    if frames * 16000 // rate >= 400 and content in ("noise", "silence"):
        assert rc == 0  # long enough, finite: transcribed


@SLOW
@given(st.integers(0, 2**31 - 1), st.sampled_from(DAMAGES))
def test_transcribe_damaged_real_audio(tiny_run, tiny_corpus, tmp_path, capsys, seed, damage):
    from lhotse import load_manifest

    src = load_manifest(CorpusLayout(tiny_corpus).cuts("dev"))[0].recording.sources[0].source
    path = tmp_path / "damaged.flac"
    path.write_bytes(Path(src).read_bytes())
    damage_file(path, damage, seed)
    _check_one_result(*_transcribe(tiny_run, path, capsys), path)
