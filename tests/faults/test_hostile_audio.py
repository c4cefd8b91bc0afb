"""Hostile audio for ``omnisparse transcribe``: files claiming hours of audio (sparse WAVs: no disk, no
time), huge files that are not audio, zero-length files, a FIFO, a device, sample rates from 1 Hz to
1 MHz and odd ones (15999 Hz used to take 27 s and 4 GB to resample). Each is one error line naming
the file (the others still transcribed) or a transcript; a file over :data:`MAX_AUDIO_S` is refused
from its header, before any sample is read; one over :data:`OFFLINE_MAX_S` is decoded chunk by chunk."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import soundfile as sf

from omnisparse.cli import main
from omnisparse.decoding import transcribe as tr
from omnisparse.deploy import apps
from omnisparse.utils.faults import sparse_wav


def _run(model, paths, capsys, *extra):
    capsys.readouterr()
    rc = main(["transcribe", str(model), *map(str, paths), *extra])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    errors = {ln.split(": ")[2]: ln for ln in cap.err.splitlines() if ln.startswith("omnisparse: error: ")}
    texts = {ln.split("\t")[0]: ln.split("\t")[1] for ln in cap.out.splitlines()
             if "\t" in ln and not ln.split("\t")[1].startswith("[")}  # final lines, not --stream partials
    return rc, errors, texts


def test_long_and_huge_files_are_refused_from_their_header(tiny_run, tmp_path, capsys):
    good = tmp_path / "good.wav"
    sf.write(good, np.random.default_rng(0).uniform(-0.3, 0.3, 16000).astype(np.float32), 16000)
    files = {"over1h.wav": 3601, "2h.wav": 7200, "4GiB.wav": 40000}
    for name, seconds in files.items():
        sparse_wav(tmp_path / name, seconds)
    huge = tmp_path / "huge-zeros.wav"  # 1 GiB that is not audio (sparse)
    with open(huge, "wb") as f:
        f.truncate(1 << 30)
    t0 = time.time()
    rc, errors, texts = _run(tiny_run, [*(tmp_path / n for n in files), huge, good], capsys)
    assert time.time() - t0 < 60  # nothing read beyond the headers
    assert rc == 1 and set(texts) == {str(good)}
    for name in files:
        assert "transcribe takes files of at most 3600 s" in errors[str(tmp_path / name)]
    assert "unreadable audio" in errors[str(huge)]
    assert os.stat(tmp_path / "4GiB.wav").st_blocks < 64  # the test itself stayed light


def test_not_audio_empty_fifo_device(tiny_run, tmp_path, capsys):
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.flac").write_text("hello, not audio\n" * 100)
    (tmp_path / "elf.mp3").write_bytes(b"\x7fELF" + bytes(4000))
    os.mkfifo(tmp_path / "fifo.wav")  # opening it would wait forever for a writer
    (tmp_path / "dir.wav").mkdir()
    paths = [tmp_path / n for n in ("empty.wav", "text.flac", "elf.mp3", "fifo.wav", "dir.wav")] + ["/dev/zero"]
    rc, errors, texts = _run(tiny_run, paths, capsys)
    assert rc == 1 and not texts and set(errors) == set(map(str, paths))
    assert "not a regular file" in errors[str(tmp_path / "fifo.wav")] and "not a regular file" in errors["/dev/zero"]


@pytest.mark.parametrize("rate, ok", [(1, False), (999, False), (1000, True), (7999, True), (8000, True),
                                      (15999, True), (16001, True), (44099, True), (48000, True), (383999, True),
                                      (1_000_000, True), (1_000_001, False)])
def test_sample_rates_resampled_quickly_or_refused(tmp_path, rate, ok):
    path = tmp_path / f"r{rate}.wav"
    frames = max(rate // 2, 200)  # half a second (200 frames at 1 Hz: 200 s)
    sf.write(path, np.random.default_rng(rate).uniform(-0.3, 0.3, frames).astype(np.float32), rate, subtype="FLOAT")
    t0 = time.time()
    if ok:
        x = tr.read_audio(path)
        assert abs(x.shape[0] - 8000) <= 8000 * 0.006 and time.time() - t0 < 10
    else:
        with pytest.raises(tr.AudioError, match="sample rate"):
            tr.read_audio(path)


def test_multichannel_is_downmixed_block_by_block(tmp_path, monkeypatch):
    x = np.random.default_rng(1).uniform(-0.5, 0.5, (5000, 6)).astype(np.float32)
    sf.write(tmp_path / "six.wav", x, 16000, subtype="FLOAT")
    monkeypatch.setattr(tr, "_BLOCK", 777)  # several blocks
    assert np.array_equal(tr.read_audio(tmp_path / "six.wav"), x.mean(axis=1))


def test_files_over_the_offline_limit_are_decoded_by_streaming(tiny_run, tmp_path, capsys, monkeypatch):
    path = tmp_path / "long.wav"
    sf.write(path, np.random.default_rng(2).uniform(-0.3, 0.3, 3 * 16000).astype(np.float32), 16000)
    rc, _, texts = _run(tiny_run, [path], capsys, "--stream")
    monkeypatch.setattr(apps, "OFFLINE_MAX_S", 1.0)  # deploy.apps runs the command over files
    called = []
    real = apps.transcribe_stream
    monkeypatch.setattr(apps, "transcribe_stream", lambda *a, **k: called.append(1) or real(*a, **k))
    rc2, errors, texts2 = _run(tiny_run, [path], capsys)
    assert rc == rc2 == 0 and texts == texts2 and set(texts) == {str(path)} and called == [1] and not errors
