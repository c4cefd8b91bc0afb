"""The command line: happy paths on the tiny model, and one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from lhotse import load_manifest

from omnisparse.cli import main
from omnisparse.data.layout import CorpusLayout


@pytest.fixture
def example_audio(tiny_corpus):
    return load_manifest(CorpusLayout(tiny_corpus).cuts("test-clean"))[0].recording.sources[0].source


def test_transcribe_offline_and_stream(tiny_run, example_audio, capsys):
    assert main(["transcribe", str(tiny_run), example_audio]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith(example_audio + "\t")
    offline = last.partition("\t")[2]
    assert main(["transcribe", str(tiny_run), example_audio, "--stream"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].partition("\t")[2] == offline
    assert all("s]" in line for line in lines[:-1])  # partial results carry a timestamp
    assert main(["transcribe", str(tiny_run), example_audio, "--method", "beam"]) == 0
    beam = capsys.readouterr().out.splitlines()[-1].partition("\t")[2]
    assert main(["transcribe", str(tiny_run), example_audio, "--stream", "--method", "beam"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].partition("\t")[2] == beam  # beam search streams too


def test_transcribe_resamples_and_downmixes(tiny_run, example_audio, tmp_path, capsys):
    x, sr = sf.read(example_audio)
    stereo8k = np.stack([x[::2], x[::2]], axis=1)
    p = tmp_path / "stereo8k.wav"
    sf.write(p, stereo8k, 8000)
    assert main(["transcribe", str(tiny_run), str(p)]) == 0
    assert str(p) in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["missing", "empty", "garbage", "directory"])
def test_transcribe_bad_files_one_line_error(tiny_run, example_audio, tmp_path, capsys, kind):
    p = tmp_path / f"{kind}.wav"
    if kind == "empty":
        sf.write(p, np.zeros(0, dtype=np.float32), 16000)
    elif kind == "garbage":
        p.write_bytes(b"RIFF....WAVEfmt garbage" * 10)
    elif kind == "directory":
        p.mkdir()
    rc = main(["transcribe", str(tiny_run), str(p), example_audio])
    cap = capsys.readouterr()
    assert rc != 0
    err = [line for line in cap.err.splitlines() if line.strip()]
    assert len(err) == 1 and str(p) in err[0] and "Traceback" not in cap.err
    assert example_audio in cap.out  # the good file is still transcribed


def test_eval_writes_wer(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--splits", "dev"]) == 0
    res = json.loads((tiny_run / "eval" / "wer.json").read_text())
    assert res["results"]["dev"]["utterances"] == 40
    assert (tiny_run / "eval" / "hyps_dev.txt").exists()


def test_eval_refuses_untrained_chunking(tiny_run, capsys):
    rc = main(["eval", str(tiny_run), "--splits", "dev", "--model.chunk_size=8"])
    assert rc == 2
    assert "chunk_size=8 (trained with 4)" in capsys.readouterr().err


def test_eval_refuses_untrained_mode(tiny_run, capsys):
    assert main(["eval", str(tiny_run), "--splits", "dev", "--mode", "full"]) == 2
    assert "trained for mode" in capsys.readouterr().err


def test_bad_override_is_one_line(capsys):
    assert main(["train", "--config", "tiny", "--train.nope=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]


def test_missing_model(tmp_path, capsys):
    assert main(["transcribe", str(tmp_path / "nothing"), "x.wav"]) == 2
    assert "no such model" in capsys.readouterr().err


def test_console_script_entry_point():
    r = subprocess.run([sys.executable, "-m", "omnisparse.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "transcribe" in r.stdout


def test_search_then_export_by_size_then_transcribe(tiny_supernet_run, tiny_corpus, example_audio, tmp_path, capsys):
    """search -> export --size-mb -> transcribe the export: the shipped file is exactly the searched size."""
    search_dir = tmp_path / "search"
    assert main(["search", "--config", "search_tiny", f"--search.supernet={tiny_supernet_run}",
                 f"--search.out_dir={search_dir}", f"--data.corpus_dir={tiny_corpus}", "--train.threads=1"]) == 0
    assert "candidates" in capsys.readouterr().out
    front = json.loads((search_dir / "pareto.json").read_text())["front"]
    pick = front[len(front) // 2]
    out = tmp_path / "export"
    assert main(["export", str(tiny_supernet_run), "--size-mb", str(pick["size_bytes"] / 1e6),
                 "--pareto", str(search_dir / "pareto.json"), "--out", str(out)]) == 0
    capsys.readouterr()
    meta = json.loads((out / "meta.json").read_text())
    chosen = min((r for r in front if r["size_bytes"] <= pick["size_bytes"]), key=lambda r: r["wer"])
    assert meta["config"] == chosen["config"]
    assert (out / "model.safetensors").stat().st_size == chosen["size_bytes"]
    assert main(["transcribe", str(out), str(example_audio), "--stream"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith(example_audio + "\t")
    assert main(["export", str(tiny_supernet_run), "--size-mb", "0.0001", "--pareto", str(search_dir / "pareto.json"),
                 "--out", str(tmp_path / "none")]) == 2
    assert "no searched sub-network of at most" in capsys.readouterr().err
