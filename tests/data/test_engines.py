"""The speech engines: speaker names, held-out speakers, parameters, and (where installed) audio that
is plausible, deterministic within and across processes, and different per variant."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import wave

import numpy as np
import pytest

from omnisparse.data.engines import ENGINES, available_engines, get_engine, split_speaker
from omnisparse.data.engines._sox import SHIFT_VARIANTS, pitch_shift, read_wav, shift_cents
from omnisparse.data.engines.espeak import ACCENTS, VARIANTS
from omnisparse.data.engines.festival import scheme_string
from omnisparse.data.engines.mbrola import _repair
from omnisparse.data.engines.pico import pico_markup

TEXT = "the quick brown fox jumps today"  # six words
NAMES = list(ENGINES)


def _need(name: str) -> None:
    reason = ENGINES[name].unavailable()
    if reason:
        pytest.skip(f"{name} not installed: {reason}")


def _params(name: str, seed: int = 0) -> dict:
    return ENGINES[name].draw_params(np.random.default_rng([seed, 7]))


def _sha(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x, dtype=np.float64).tobytes()).hexdigest()


def test_registry():
    assert NAMES == ["espeak", "mbrola", "festival", "hibari", "piper", "pico"]
    assert all(get_engine(n) is ENGINES[n] and ENGINES[n].name == n for n in NAMES)
    with pytest.raises(ValueError, match="espeak, mbrola, festival, hibari, piper, pico"):
        get_engine("flite")
    reasons = available_engines()
    assert list(reasons) == NAMES
    assert all(r is None or (isinstance(r, str) and "\n" not in r and "install" in r) for r in reasons.values())


@pytest.mark.parametrize("name", NAMES)
def test_speakers_well_formed(name):
    speakers = ENGINES[name].speakers()
    assert speakers and len(set(speakers)) == len(speakers)
    for s in speakers:
        engine, voice, variant = split_speaker(s)
        assert engine == name and s == f"{engine}:{voice}+{variant}"
        assert ":" not in voice + variant and "+" not in voice + variant


@pytest.mark.parametrize("name", NAMES)
def test_held_out_leaves_every_voice_and_variant(name):
    eng = ENGINES[name]
    speakers, held = eng.speakers(), eng.held_out()
    assert set(held) <= set(speakers) and len(set(held)) == len(held)
    assert held == [s for s in speakers if s in set(held)]  # in speakers() order
    seen = [s for s in speakers if s not in set(held)]
    voices = {split_speaker(s)[1] for s in speakers}
    variants = {split_speaker(s)[2] for s in speakers}
    if len(voices) == 1:
        assert held == []  # a held-out variant would be heard nowhere else
    elif len(variants) > 2:
        assert held
        assert {split_speaker(s)[1] for s in seen} == voices
        assert {split_speaker(s)[2] for s in seen} == variants


def test_espeak_speakers_and_held_out_are_the_first_corpus():
    eng = ENGINES["espeak"]
    assert eng.speakers() == [f"espeak:{a}+{v}" for a in ACCENTS for v in VARIANTS]
    old_rule = [f"espeak:{a}+{VARIANTS[k % len(VARIANTS)]}" for i, a in enumerate(ACCENTS) for k in (2 * i, 2 * i + 1)]
    assert sorted(eng.held_out()) == sorted(old_rule) and len(old_rule) == 16


@pytest.mark.parametrize("name", NAMES)
def test_draw_params_seeded_and_json(name):
    a, b, c = _params(name), _params(name), _params(name, seed=1)
    assert a == b and json.loads(json.dumps(a)) == a
    assert a != c


def test_shift_variants_and_helpers():
    assert [shift_cents(v, female=True) for v in SHIFT_VARIANTS] == [-300, -200, -100, 0, 50, 100, 150]
    assert [shift_cents(v, female=False) for v in SHIFT_VARIANTS] == [-150, -100, -50, 0, 100, 200, 300]
    with pytest.raises(ValueError, match="unknown pitch-shift variant"):
        shift_cents("p4", female=True)
    assert scheme_string('say "hi" \\ now\n') == '"say \\"hi\\" \\\\ now"'
    assert pico_markup("a < b & c", 90, 110) == "<speed level='90'><pitch level='110'>a &lt; b &amp; c</pitch></speed>"
    lines = [["n", "60"], ["u", "80"], ["l=", "70"], ["t", "50"], ["k", "40"]]
    assert _repair(lines, "u", "l=") and [f[0] for f in lines] == ["n", "u", "l", "t", "k"]
    assert _repair(lines, "t", "k") and [f[0] for f in lines] == ["n", "u", "l", "t", "_", "k"]
    assert not _repair(lines, "x", "y")


def test_read_wav_of_a_stream_with_bogus_sizes():
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.arange(-50, 50, dtype="<i2").tobytes())
    data = bytearray(buf.getvalue())
    for size in (0, 0x7FFFF000):  # mbrola and espeak-ng on a pipe
        data[40:44] = size.to_bytes(4, "little")
        x, sr = read_wav(bytes(data), "test")
        assert sr == 16000 and len(x) == 100 and x[0] == -50 / 32768


def test_pitch_shift_keeps_duration_and_moves_pitch():
    if ENGINES["pico"].unavailable() and ENGINES["espeak"].unavailable():
        pytest.skip("sox-based engines not installed")
    sr = 16000
    t = np.arange(sr) / sr
    x = 0.5 * np.sin(2 * np.pi * 200 * t)
    y = pitch_shift(x, sr, 1200)
    assert abs(len(y) - len(x)) < sr * 0.02
    spec = np.abs(np.fft.rfft(y[2000:14000]))
    assert abs(np.argmax(spec) * sr / 12000 - 400) < 10
    assert np.array_equal(pitch_shift(x, sr, 0), x)


@pytest.mark.parametrize("name", NAMES)
def test_synthesize(name):
    _need(name)
    eng = ENGINES[name]
    speakers = eng.speakers()
    a = speakers[0]
    b = next(s for s in speakers if split_speaker(s)[1] == split_speaker(a)[1] and s != a)  # another variant
    params = _params(name)
    x, sr = eng.synthesize(TEXT, a, params)
    assert x.dtype == np.float64 and x.ndim == 1 and sr in (16000, 22050, 24000)
    assert np.all(np.isfinite(x)) and np.max(np.abs(x)) <= 1.0
    assert np.sqrt(np.mean(x**2)) > 1e-3
    assert 0.3 <= len(x) / sr <= 10.0
    x2, sr2 = eng.synthesize(TEXT, a, params)
    assert sr2 == sr and x2.tobytes() == x.tobytes()
    y, _ = eng.synthesize(TEXT, b, params)
    assert len(y) != len(x) or not np.allclose(x, y, atol=1e-3)
    with pytest.raises(ValueError):
        eng.synthesize(TEXT, f"{name}:nope+nope", params)


def test_same_audio_in_a_fresh_process():
    names = [n for n in NAMES if ENGINES[n].unavailable() is None]
    if not names:
        pytest.skip("no engine installed")
    jobs = [(n, ENGINES[n].speakers()[-1], _params(n, seed=3)) for n in names]
    here = {n: _sha(ENGINES[n].synthesize(TEXT, s, p)[0]) for n, s, p in jobs}
    code = ("import hashlib, json, sys, numpy as np\n"
            "from omnisparse.data.engines import ENGINES\n"
            "out = {}\n"
            "for n, s, p in json.loads(sys.argv[1]):\n"
            "    x = np.ascontiguousarray(ENGINES[n].synthesize(sys.argv[2], s, p)[0], dtype=np.float64)\n"
            "    out[n] = hashlib.sha256(x.tobytes()).hexdigest()\n"
            "print(json.dumps(out))\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-c", code, json.dumps(jobs), TEXT], capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == here


def test_festival_restarts_after_its_process_dies():
    _need("festival")
    from omnisparse.data.engines import festival

    eng = ENGINES["festival"]
    params = _params("festival")
    x, _ = eng.synthesize(TEXT, "festival:ked+0", params)
    proc = festival._festival().proc
    proc.kill()
    proc.wait()
    y, _ = eng.synthesize(TEXT, "festival:ked+0", params)
    assert x.tobytes() == y.tobytes()
    with pytest.raises(RuntimeError, match="nothing to say"):
        eng.synthesize("...", "festival:ked+0", params)


@pytest.mark.parametrize("name", ["espeak", "mbrola", "festival", "pico"])
def test_unavailable_names_the_package(name, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    reason = ENGINES[name].unavailable()
    assert reason is not None and "not found" in reason and "apt-get install" in reason and "\n" not in reason


def test_piper_audio_does_not_depend_on_the_guessed_noise_length(monkeypatch):
    _need("piper")
    from omnisparse.data.engines import piper

    params = _params("piper")
    x, _ = ENGINES["piper"].synthesize(TEXT, "piper:joe+0", params)
    monkeypatch.setattr(piper, "FRAMES_PER_ID", 0.5)  # too short: the graph fails, the guess is doubled
    y, _ = ENGINES["piper"].synthesize(TEXT, "piper:joe+0", params)
    assert x.tobytes() == y.tobytes()
