"""The fault classes of ``bench/faults.py`` about other writers and hostile input (a mixin of its
``Bench``; the mechanisms are those of ``omnisparse.utils.faults`` that ``tests/faults`` use):

* ``concurrent_writer``: every writing command into a directory another process holds (one line naming
  it, the directory untouched); locks of a SIGKILLed holder (pid gone or reused) taken over and the run
  resumed to the uninterrupted result; locks of another host or unreadable ones never taken over;
* ``state_bitflip``: digit flips that keep a checkpoint's or a search's ``state.json`` valid JSON, caught
  by its checksum: the previous checkpoint / generation is used (and resumed to the same result), an
  ``eval`` of the flipped checkpoint itself is one line;
* ``hostile_config``: every setting with a value of the wrong type, every range just left, unknown keys
  and sections, presets that are no mapping, no YAML, no text, nested too deep, with Python tags;
* ``hostile_manifest``: damaged or malicious cut manifest lines (absurd durations, missing fields, a
  shell-command or URL audio source, ``..`` paths) through ``eval``, ``eval`` on the fly, ``data
  prepare`` and training: each skipped and counted, nothing run, nothing written outside the output;
* ``hostile_export``: export directories whose ``meta.json`` disagrees with the weights, ONNX exports
  with wrong metadata or garbage files, through ``transcribe`` / ``eval`` / ``check-onnx``;
* ``hostile_audio``: files claiming hours (sparse WAVs), huge non-audio, empty files, a FIFO, a device,
  sample rates from 1 Hz to 1 MHz, multi-channel, through one ``transcribe`` call (and ``--stream``);
* ``export_overwrite``: ``export-onnx`` and ``export`` into a file, a non-empty directory, a previous
  export, a held directory (with and without ``--overwrite``).
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from unittest import mock

import numpy as np

from fault_outcomes import verdict
from omnisparse.utils.hostile_inputs import read_manifest_rows, value_outside, write_manifest_rows

WRONG = {"int": "wide", "float": "[1, 2]", "bool": "maybe", "str": "[a, b]", "list": "{a: 1}"}  # by field type
PRESETS = {  # a preset file's content -> words of the one error line
    "a list": ("- model\n- train\n", "top level must be a mapping"),
    "a string": ("just words\n", "top level must be a mapping"),
    "a number": ("42\n", "top level must be a mapping"),
    "invalid YAML": ("train: {lr: [1\n", "not valid YAML"),
    "a Python tag": ("train: {lr: !!python/object/apply:os.system [\"echo pwned\"]}\n", "constructor"),
    "an unknown section": ("trian: {lr: 0.1}\n", "unknown key 'trian'"),
    "an unknown key": ("train: {learning_rate: 0.1}\n", "learning_rate"),
    "a section that is a scalar": ("model: 5\n", "model: expected a mapping"),
    "a NaN": ("train: {lr: .nan}\n", "expected a finite number"),
    "an infinite integer": ("model: {n_layers: .inf}\n", "expected an integer"),
    "a base that is a list": ("base: [tiny]\n", "`base:` must name a preset"),
    "a missing base": ("base: no-such-preset\n", "no preset"),
    "nesting 5000 deep": ("model: " + "[" * 5000 + "]" * 5000 + "\n", "not valid YAML"),
    "integer keys": ("{1: 2}\n", "unknown key 1"),
}


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.text = []

    def emit(self, record):
        self.text.append(record.getMessage())


class HostileFaults:
    """Mixed into ``bench/faults.py``'s ``Bench``, which provides ``record``, ``dir``, ``args``, ``cfg``,
    ``same_weights``, ``search_args``, ``ref`` / ``ref_search`` / ``dense_args`` and, as ``cli_fn`` /
    ``quiet_fn``, its ``cli`` and ``quiet``."""

    def setup_hostile(self) -> None:
        """A sparse export and its ONNX export of the reference dense run."""
        from omnisparse.deploy.onnx_export import export_onnx
        from omnisparse.export.subnet import export_subnet

        quiet = self.quiet_fn
        quiet(export_subnet, self.ref / "dense", "uniform:0.5", "int8-sparse", self.ref / "sparse-export")
        quiet(export_onnx, self.ref / "sparse-export", self.ref / "onnx")
        import soundfile as sf

        self.wav = self.ref / "x.wav"
        sf.write(self.wav, np.random.default_rng(0).uniform(-0.3, 0.3, 16000).astype(np.float32), 16000)

    def _cli(self, *args):
        return self.cli_fn(*args)

    # -------------------------------------------------------------------------------- concurrent writer
    def concurrent_writer(self) -> None:
        from omnisparse.io.lock import LOCK_FILE
        from omnisparse.utils.faults import held_dir

        d = self.dir("held")
        sup = ["--search.supernet=" + str(self.ref / "supernet")]
        commands = {
            "train": ["train", "--config", "tiny", *self.args(d)],
            "train --supernet": ["train", "--supernet", "--config", "supernet_tiny", *self.args(d)],
            "prune": ["prune", "--config", "prune_tiny", *self.args(d)],
            "pretrain": ["pretrain", "--config", "pretrain_tiny", *self.args(d)],
            "search": ["search", "--config", "search_tiny", *sup, f"--search.out_dir={d}"],
            "data build": ["data", "build", "--preset", "tiny", "--out", str(d), "--jobs", "1"],
            "export --overwrite": ["export", str(self.ref / "dense"), "--sparsity", "0.5", "--out", str(d), "--overwrite"],
            "export-onnx --overwrite": ["export-onnx", str(self.ref / "sparse-export"), "--out", str(d), "--overwrite"],
        }
        with held_dir(d, "omnisparse train") as holder:
            for name, cmd in commands.items():
                def case(cmd=cmd):
                    rc, _, err = self._cli(*cmd)
                    untouched = sorted(p.name for p in d.iterdir()) == [LOCK_FILE]
                    ok = rc == 1 and len(err) == 1 and f"in use by pid {holder.pid} " in err[0]
                    return verdict("failed_cleanly", ok, untouched), (err or [f"rc {rc}"])[0][-150:]
                self.record("concurrent_writer", f"{name} into a held directory", case)
        self._held_corpus()
        for kind in ("dead pid", "reused pid"):
            self.record("concurrent_writer", f"stale lock ({kind}): taken over, resumed", lambda k=kind: self._stale(k))
        for kind, content, words in [("another host", '{"pid": 1, "host": "elsewhere", "command": "omnisparse train"}',
                                      "never taken over"), ("garbage", "\x00\x01garbage", "unreadable"),
                                     ("empty (being written)", "", "unreadable")]:
            def refused(content=content, words=words):
                run = self.dir("lock")
                run.mkdir()
                (run / LOCK_FILE).write_text(content)
                rc, _, err = self._cli("train", "--config", "tiny", *self.args(run, *self.dense_args))
                kept = (run / LOCK_FILE).read_text() == content and sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
                ok = rc == 1 and len(err) == 1 and words in err[0]
                return verdict("failed_cleanly", ok, kept), (err or [f"rc {rc}"])[0][-150:]
            self.record("concurrent_writer", f"lock of {kind}", refused)

    def _held_corpus(self) -> None:
        """Writers of a corpus (``data prepare``, a training that must prepare it, ``data librispeech``)
        into one that ``data build`` holds: refused, the corpus untouched, no run directory left."""
        from omnisparse.data.layout import CorpusLayout
        from omnisparse.utils.faults import held_dir

        corpus = self.dir("held-corpus")
        shutil.copytree(CorpusLayout(self.corpus).manifests, CorpusLayout(corpus).manifests)
        before = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*"))
        src = self.dir("held-librispeech-src")
        (src / "LibriSpeech" / "dev-clean" / "1089").mkdir(parents=True)
        run = self.dir("held-corpus-run")
        commands = {
            "data prepare": ["data", "prepare", "--corpus", str(corpus), "--vocab-size", "64", "--jobs", "1"],
            "train on the corpus unprepared": ["train", "--config", "tiny", *self.args(run)[1:],
                                               f"--data.corpus_dir={corpus}"],
            "data librispeech": ["data", "librispeech", str(src), "--out", str(corpus)],
        }
        with held_dir(corpus, "omnisparse data build") as holder:
            for name, cmd in commands.items():
                def case(cmd=cmd):
                    rc, _, err = self._cli(*cmd)
                    lock = corpus / ".omnisparse.lock"
                    now = sorted(str(p.relative_to(corpus)) for p in corpus.rglob("*") if p != lock)
                    ok = rc == 1 and len(err) == 1 and f"in use by pid {holder.pid} " in err[0]
                    return verdict("failed_cleanly", ok, now == before and not run.exists()), \
                        (err or [f"rc {rc}"])[0][-150:]
                self.record("concurrent_writer", f"{name} into a corpus being built", case)

    def _stale(self, kind: str):
        import socket

        from omnisparse.io.lock import LOCK_FILE
        from omnisparse.train.registry import train
        from omnisparse.utils.faults import dead_pid

        run = self.dir("stale")
        shutil.copytree(self.ref / "dense", run)
        shutil.rmtree(run / "ckpt-00000008")
        pid = dead_pid() if kind == "dead pid" else os.getppid()
        (run / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "command": "omnisparse train",
                                                 "started": "2026-01-01T00:00:00Z", "process": "another-boot:1"}))
        cap, logger = _Capture(), logging.getLogger("omnisparse.io.lock")
        level = logger.level
        logger.addHandler(cap)
        logger.setLevel(logging.WARNING)  # the bench logs errors only
        try:
            train(self.cfg("tiny", run, *self.dense_args))
        finally:
            logger.removeHandler(cap)
            logger.setLevel(level)
        warned = any(f"taking over the lock of pid {pid} " in t for t in cap.text)
        kept = self.same_weights("dense", run, 8)
        return verdict("recovered_identical", warned and not (run / LOCK_FILE).exists(), kept), f"warned {warned}"

    # -------------------------------------------------------------------------------- state bit flips
    def state_bitflip(self, n_ckpt: int, n_search: int) -> None:
        from omnisparse.io import checkpoint as ck
        from omnisparse.search.state import load_saved_state
        from omnisparse.utils.faults import flip_digit

        run = self.dir("bitflip")
        for step in (6, 8):
            shutil.copytree(self.ref / "dense" / f"ckpt-{step:08d}", run / f"ckpt-{step:08d}")
        state = run / "ckpt-00000008" / "state.json"
        text = state.read_text()
        for i in range(n_ckpt):
            seed = self.rng.randrange(2**31)

            def case(seed=seed):
                state.write_text(flip_digit(text, seed))
                found = ck.latest_checkpoint(run)
                rc, _, err = self._cli("eval", str(state.parent), "--splits", "dev", f"--out={run / 'ev'}")
                kept = found is not None and found[0].name == "ckpt-00000006" and not (run / "ev").exists()
                ok = rc == 2 and len(err) == 1 and "fails its checksum" in err[0]
                return verdict("recovered_as_designed", ok, kept), "ckpt 8 -> ckpt 6; eval of ckpt 8: one line"
            self.record("state_bitflip", f"checkpoint state.json digit (seed {seed})", case)
        state.write_text(text)

        src = self.ref / "search"
        out = self.dir("bitflip-search")
        out.mkdir()
        prev_generation = json.loads((src / "state.prev.json").read_text())["generation"]
        stext = (src / "state.json").read_text()
        for i in range(n_search):
            seed = self.rng.randrange(2**31)

            def scase(seed=seed):
                for name in ("state.json.corrupt",):
                    (out / name).unlink(missing_ok=True)
                shutil.copy(src / "state.prev.json", out / "state.prev.json")
                (out / "state.json").write_text(flip_digit(stext, seed))
                got = load_saved_state(out)
                ok = got is not None and got["generation"] == prev_generation and (out / "state.json.corrupt").exists()
                return verdict("recovered_as_designed", kept=ok), f"generation {prev_generation} used"
            self.record("state_bitflip", f"search state.json digit (seed {seed})", scase)

        for what in ("random digit", "step", "format_version"):
            self.record("state_bitflip", f"checkpoint {what} flipped, resumed", lambda w=what: self._flip_resume(w))
        for _ in range(2):
            seed = self.rng.randrange(2**31)
            self.record("state_bitflip", f"search state flipped (seed {seed}), resumed", lambda s=seed: self._flip_search(s))

    def _flip_resume(self, what: str):
        from omnisparse.train.registry import train
        from omnisparse.utils.faults import flip_digit

        run = self.dir("flip-resume")
        shutil.copytree(self.ref / "dense", run)
        shutil.rmtree(run / "ckpt-00000008")
        state = run / "ckpt-00000006" / "state.json"
        text = state.read_text()
        if what == "step":
            damaged = text.replace('"step": 6,', '"step": 7,', 1)
        elif what == "format_version":
            damaged = text.replace('"format_version": 1,', '"format_version": 3,', 1)
        else:
            damaged = flip_digit(text, self.rng.randrange(2**31))
        if damaged == text:
            return "crashed", f"could not flip {what}"
        state.write_text(damaged)
        train(self.cfg("tiny", run, *self.dense_args))
        ok = self.same_weights("dense", run, 8) and (run / "ckpt-00000006.corrupt").exists()
        return verdict("recovered_identical", kept=ok), "ckpt 6 set aside, resumed from ckpt 4"

    def _flip_search(self, seed: int):
        from omnisparse.config import load_config
        from omnisparse.search.run import run_search
        from omnisparse.utils.faults import flip_digit

        out = self.dir("flip-search")
        shutil.copytree(self.ref / "search", out)
        (out / "state.json").write_text(flip_digit((out / "state.json").read_text(), seed))
        got = run_search(load_config("search_tiny", self.search_args(out)), progress=False, tensorboard=False)
        same = got["table"] == self.ref_search["table"] and got["pareto"] == self.ref_search["pareto"]
        return verdict("recovered_identical", kept=same), "previous generation re-run"

    # -------------------------------------------------------------------------------- hostile config
    def hostile_config(self) -> None:
        from omnisparse.config import RANGES, Config

        cases = []  # (name, cli args, words of the error line)
        for section in fields(Config):
            for f in fields(getattr(Config(), section.name)):
                typ = str(f.type)
                kind = "list" if typ.startswith("list") else "str" if "Literal" in typ else \
                    next((k for k in ("bool", "float", "int", "str") if k in typ), "str")
                value = "no-such-choice" if "Literal" in typ else WRONG[kind]
                cases.append((f"{section.name}.{f.name} = {value}", ["--config", "tiny", f"--{section.name}.{f.name}={value}"],
                              f"{section.name}.{f.name}"))
        for section, rules in RANGES.items():
            for key, rule in rules.items():
                ftype = str({f.name: f.type for f in fields(getattr(Config(), section))}[key])
                v = value_outside(rule)
                v = (int(v) if float(v).is_integer() else int(v) + 1) if "int" in ftype else v
                v = [v] if ftype.startswith("list") else v
                cases.append((f"{section}.{key} = {v} (range {rule})", ["--config", "tiny", f"--{section}.{key}={v}"],
                              f"{section}.{key}"))
        for section in fields(Config):
            cases.append((f"unknown key in {section.name}", ["--config", "tiny", f"--{section.name}.no_such_key=1"],
                          "no_such_key"))
        for bad in ("trian", "modle", "x"):
            cases.append((f"unknown section {bad}", ["--config", "tiny", f"--{bad}.lr=1"], f"unknown key '{bad}'"))
        for ov, words in [("--train.lr=[1", "not valid YAML"), ("--train.lr=!!python/object/apply:os.system [x]", "constructor"),
                          ("--train.lr=.nan", "finite"), ("--train.lr=1.0e999", "finite"), ("--model.d_model=1.0e400", "d_model"),
                          ("--model=3", "needs a section")]:
            cases.append((ov, ["--config", "tiny", ov], words))
        root = self.dir("presets")
        root.mkdir()
        for name, (text, words) in PRESETS.items():
            p = root / f"{len(cases)}.yaml"
            p.write_text(text)
            cases.append((f"preset: {name}", ["--config", str(p)], words))
        for i in range(6):
            p = root / f"garbage{i}.yaml"
            p.write_bytes(np.random.default_rng(i).integers(0, 256, 200 + 300 * i, dtype=np.uint8).tobytes())
            cases.append((f"preset: binary garbage {i}", ["--config", str(p)], str(p)))
        (root / "dir.yaml").mkdir()
        cases.append(("preset: a directory", ["--config", str(root / "dir.yaml")], "cannot read"))
        (root / "a.yaml").write_text(f"base: {root / 'b.yaml'}\n")
        (root / "b.yaml").write_text(f"base: {root / 'a.yaml'}\n")
        cases.append(("preset: circular base", ["--config", str(root / "a.yaml")], "circular"))
        for name, args, words in cases:
            def case(args=args, words=words):
                out = self.dir("cfg")
                rc, _, err = self._cli("train", *args, f"--train.out_dir={out}", f"--data.corpus_dir={out}-corpus")
                ok = rc == 2 and len(err) == 1 and words in err[0]
                return verdict("failed_cleanly", ok, not out.exists()), (err or [f"rc {rc}"])[0][-150:]
            self.record("hostile_config", name, case)
        for ov, words in [("--model.d_model=48", "cannot change at decoding time"), ("--model.nope=1", "unknown key"),
                          ("--model.chunk_size=abc", "expected an integer"), ("--decode.beam=0", "decode.beam")]:
            def ecase(ov=ov, words=words):
                out = self.dir("ev")
                rc, _, err = self._cli("eval", str(self.ref / "dense"), "--splits", "dev", f"--out={out}", ov)
                ok = rc == 2 and len(err) == 1 and words in err[0]
                return verdict("failed_cleanly", ok, not out.exists()), (err or [f"rc {rc}"])[0][-150:]
            self.record("hostile_config", f"eval {ov}", ecase)

    # -------------------------------------------------------------------------------- hostile manifest
    def _corpus_copy(self, name: str) -> Path:
        d = self.dir(name) / "corpus"
        shutil.copytree(self.corpus, d, ignore=shutil.ignore_patterns("audio", "feats_*", "*.lca", ".omnisparse.lock",
                                                                      "augment"))
        return d

    def _count_planted(self, tag: str, want: dict, got: dict, behaved: bool, kept: bool, detail: str,
                       result: Callable[[], bool] = lambda: True) -> None:
        """One case per planted cut. ``behaved`` (the command's exit) and ``kept`` (input untouched,
        nothing written outside) hold for all of them; ``result`` (the command's output) and each
        reason's count against what was planted are judged only when the command behaved."""
        for reason, n in want.items():
            for _ in range(n):
                self.record("hostile_manifest", f"{tag}: {reason}",
                            lambda r=reason, n=n: (verdict("recovered_as_designed", behaved, kept,
                                                           result=lambda: result() and got.get(r) == n),
                                                   f"{r}: skipped and counted ({got.get(r)}); {detail}"))

    def hostile_manifest(self, copies: int) -> None:
        from omnisparse.utils.faults import tree_digest
        from omnisparse.utils.hostile_inputs import plant_hostile_cuts

        # eval on stored features
        corpus = self._corpus_copy("manifest-eval")
        work, marker = corpus.parent, corpus.parent / "PWNED"
        good = read_manifest_rows(corpus / "fbank" / "cuts_dev.jsonl.gz")
        rows, want = plant_hostile_cuts(good, marker, copies)
        write_manifest_rows(corpus / "fbank" / "cuts_dev.jsonl.gz", rows)
        before = tree_digest(work)
        rc, _, err = self._cli("eval", str(self.ref / "dense"), "--splits", "dev", f"--data.corpus_dir={corpus}",
                               f"--out={work / 'eval'}")
        res = json.loads((work / "eval" / "wer.json").read_text())["results"]["dev"] if rc == 0 else {}
        kept = not marker.exists() and tree_digest(work, exclude=("eval",)) == before
        self._count_planted("eval", want, res.get("skipped", {}), rc == 0, kept, f"rc {rc}, {res.get('utterances')} decoded",
                            result=lambda res=res, n=len(good): res.get("utterances") == n)

        # eval on the fly: audio from a command, a URL, a ../ path, an infinite duration
        corpus = self._corpus_copy("manifest-otf")
        marker = corpus.parent / "PWNED"
        good = read_manifest_rows(corpus / "manifests" / "cuts_dev.jsonl.gz")[:6]
        src = ("recording", "sources", 0)
        bad = []
        for i in range(copies):
            cmd = json.loads(json.dumps(good[i % 6]))
            cmd["recording"]["sources"][0].update(type="command", source=f"touch {marker}")
            url = json.loads(json.dumps(good[i % 6]))
            url["recording"]["sources"][0].update(type="url", source="http://127.0.0.1:9/x.flac")
            esc = json.loads(json.dumps(good[i % 6]))
            esc["recording"]["sources"][0]["source"] = "../" * 6 + "etc/passwd"
            bad += [{**cmd, "id": f"cmd{i}"}, {**url, "id": f"url{i}"}, {**esc, "id": f"esc{i}"},
                    {**good[i % 6], "duration": float("inf"), "id": f"inf{i}"}]
        del src
        write_manifest_rows(corpus / "manifests" / "cuts_dev.jsonl.gz", good + bad)
        rc, _, err = self._cli("eval", str(self.ref / "dense"), "--splits", "dev", f"--data.corpus_dir={corpus}",
                               f"--out={corpus.parent / 'eval'}", "--data.on_the_fly_features=true")
        res = json.loads((corpus.parent / "eval" / "wer.json").read_text())["results"]["dev"] if rc == 0 else {}
        want = {"unsafe_source": 2 * copies, "unsafe_path": copies, "bad_duration": copies}
        self._count_planted("eval on the fly", want, res.get("skipped", {}), rc == 0, not marker.exists(),
                            f"rc {rc}; command not run", result=lambda res=res: res.get("utterances") == 6)

        # data prepare
        from omnisparse.data.features import prepare_features

        quiet = self.quiet_fn
        corpus = self._corpus_copy("manifest-prepare")
        marker = corpus.parent / "PWNED"
        shutil.rmtree(corpus / "fbank")
        good = read_manifest_rows(corpus / "manifests" / "cuts_dev.jsonl.gz")[:8]
        rows, want = plant_hostile_cuts(good, marker, copies)
        write_manifest_rows(corpus / "manifests" / "cuts_dev.jsonl.gz", rows)
        report = quiet(prepare_features, corpus, ["dev"], num_jobs=1)["dev"]
        saved = json.loads((corpus / "fbank" / "validation_dev.json").read_text())
        self._count_planted("data prepare", want, dict(report.counts), True, not marker.exists(),
                            f"{report.kept} kept, validation_dev.json",
                            result=lambda: report.kept == len(good) and saved["counts"] == dict(report.counts))

        # training
        from omnisparse.train.registry import train

        corpus = self._corpus_copy("manifest-train")
        marker = corpus.parent / "PWNED"
        rows, want = plant_hostile_cuts(read_manifest_rows(corpus / "fbank" / "cuts_train.jsonl.gz"), marker, copies)
        write_manifest_rows(corpus / "fbank" / "cuts_train.jsonl.gz", rows)
        try:
            out = train(self.cfg("tiny", corpus.parent / "run", "--train.max_steps=2", f"--data.corpus_dir={corpus}"))
            skipped, ok = out["cost"]["skipped_utterances"], out["step"] == 2
        except Exception as e:  # noqa: BLE001 - counted below
            skipped, ok = {}, False
            self.record("hostile_manifest", "train", lambda e=e: ("crashed", repr(e)))
        listing = sorted(p.name for p in corpus.parent.iterdir()) == ["corpus", "run"]
        self._count_planted("train", want, skipped, ok, listing and not marker.exists(), "cost.json skipped_utterances")

        for content, words in [(b"\x00garbage" * 100, "not a readable JSON-lines cut manifest"),
                               (gzip.compress(b"[1]\n{}\n"), "no usable utterances"),
                               (gzip.compress(b""), "no usable utterances")]:
            def whole(content=content, words=words):
                corpus = self._corpus_copy("manifest-whole")
                (corpus / "fbank" / "cuts_dev.jsonl.gz").write_bytes(content)
                rc, _, err = self._cli("eval", str(self.ref / "dense"), "--splits", "dev", f"--data.corpus_dir={corpus}",
                                       f"--out={corpus.parent / 'eval'}")
                ok = rc == 2 and len(err) == 1 and words in err[0]
                return verdict("failed_cleanly", behaved=ok), (err or [f"rc {rc}"])[0][-150:]
            self.record("hostile_manifest", f"whole manifest: {words}", whole)

    # -------------------------------------------------------------------------------- hostile export
    def hostile_export(self) -> None:
        from omnisparse.utils.faults import tree_digest
        from omnisparse.utils.hostile_inputs import EXPORT_META_EDITS, ONNX_META_EDITS, set_onnx_metadata

        for name, (edit, words) in EXPORT_META_EDITS.items():
            d = self.dir("hexport")
            shutil.copytree(self.ref / "sparse-export", d)
            meta = json.loads((d / "meta.json").read_text())
            edit(meta)
            (d / "meta.json").write_text(json.dumps(meta))
            for cmd in (["transcribe", str(d), str(self.wav)], ["eval", str(d), "--splits", "dev", f"--out={d}-ev"]):
                def case(cmd=cmd, d=d, words=words):
                    before = tree_digest(d)
                    rc, _, err = self._cli(*cmd)
                    ok = rc == 2 and len(err) == 1 and words in err[0]
                    return verdict("failed_cleanly", ok, tree_digest(d) == before), (err or [f"rc {rc}"])[0][-150:]
                self.record("hostile_export", f"{cmd[0]}: meta.json {name}", case)
        onnx_cases = {**{k: ("meta", v) for k, v in ONNX_META_EDITS.items()},
                      "garbage graph": ("file", ("encoder.onnx", "not a loadable ONNX graph")),
                      "garbage predictor": ("file", ("predictor.onnx", "not a loadable ONNX graph")),
                      "garbage tokenizer": ("file", ("tokenizer.model", "tokenizer.model is unreadable")),
                      "garbage stats": ("file", ("global_stats.json", "global_stats.json is corrupt")),
                      "joiner missing": ("rm", ("joiner.onnx", "joiner.onnx missing"))}
        for name, (how, spec) in onnx_cases.items():
            d = self.dir("honnx")
            shutil.copytree(self.ref / "onnx", d)
            if how == "meta":
                set_onnx_metadata(d / "encoder.onnx", spec[0])
            elif how == "file":
                (d / spec[0]).write_bytes(b"\xff\xfe garbage" * 50)
            else:
                (d / spec[0]).unlink()
            words = spec[1]
            for cmd, w in ((["check-onnx", str(d), "--max-utts", "1"], words), (["transcribe", str(d), str(self.wav)],
                                                                                "is an ONNX export")):
                def ocase(cmd=cmd, w=w):
                    rc, _, err = self._cli(*cmd)
                    ok = rc == 2 and len(err) == 1 and w in err[0]
                    return verdict("failed_cleanly", behaved=ok), (err or [f"rc {rc}"])[0][-150:]
                self.record("hostile_export", f"{cmd[0]}: onnx {name}", ocase)

    # -------------------------------------------------------------------------------- hostile audio
    def hostile_audio(self) -> None:
        import soundfile as sf

        from omnisparse.decoding import transcribe as tr
        from omnisparse.utils.faults import sparse_wav

        d = self.dir("haudio")
        d.mkdir()
        want: dict[str, str] = {}  # path -> words of its error line, or "" for a transcript
        for seconds, rate, ch in ((3601, 16000, 1), (7200, 8000, 1), (40000, 16000, 1), (5000, 48000, 2)):
            p = d / f"long-{seconds}s-{rate}.wav"
            sparse_wav(p, seconds, rate, ch)
            want[str(p)] = "transcribe takes files of at most 3600 s"
        huge = d / "huge-zeros.wav"
        with open(huge, "wb") as f:
            f.truncate(1 << 30)
        want[str(huge)] = "unreadable audio"
        for name, blob in (("empty.wav", b""), ("text.flac", b"not audio\n" * 200), ("elf.mp3", b"\x7fELF" + bytes(4000)),
                           ("png.ogg", b"\x89PNG\r\n\x1a\n" + bytes(2000)), ("json.wav", b'{"a": 1}' * 100)):
            (d / name).write_bytes(blob)
            want[str(d / name)] = "unreadable audio"
        os.mkfifo(d / "fifo.wav")
        (d / "dir.wav").mkdir()
        want.update({str(d / "fifo.wav"): "not a regular file", "/dev/zero": "not a regular file",
                     str(d / "dir.wav"): "is a directory", str(d / "missing.wav"): "no such file"})
        rng = np.random.default_rng(3)
        for rate in (1, 999, 1000, 7999, 8000, 11025, 15999, 16001, 44099, 96000, 383999, 1_000_000, 1_000_001):
            p = d / f"rate-{rate}.wav"
            sf.write(p, rng.uniform(-0.3, 0.3, max(rate // 2, 200)).astype(np.float32), rate, subtype="FLOAT")
            want[str(p)] = "sample rate" if rate < 1000 or rate > 1_000_000 else ""
        for ch in (2, 6):
            p = d / f"{ch}ch.wav"
            sf.write(p, rng.uniform(-0.3, 0.3, (12000, ch)).astype(np.float32), 16000, subtype="FLOAT")
            want[str(p)] = ""
        nan = rng.uniform(-0.3, 0.3, 8000).astype(np.float32)
        nan[100] = np.nan
        sf.write(d / "nan.wav", nan, 16000, subtype="FLOAT")
        want[str(d / "nan.wav")] = "NaN or infinite"
        sf.write(d / "long-ok.wav", rng.uniform(-0.3, 0.3, 4 * 16000).astype(np.float32), 16000)
        want[str(d / "long-ok.wav")] = ""  # over OFFLINE_MAX_S (lowered below): decoded by streaming
        for stream in (False, True):
            out, err = io.StringIO(), io.StringIO()
            import contextlib

            from omnisparse.cli import main as cli_main
            try:
                with mock.patch.object(tr, "OFFLINE_MAX_S", 3.0), contextlib.redirect_stdout(out), \
                        contextlib.redirect_stderr(err):
                    rc = cli_main(["transcribe", str(self.ref / "dense"), *want, *(["--stream"] if stream else [])])
            except Exception as e:  # noqa: BLE001
                for p in want:
                    self.record("hostile_audio", Path(p).name, lambda e=e: ("crashed", repr(e)))
                continue
            errors = [ln for ln in err.getvalue().splitlines() if ln.startswith("omnisparse: error: ")]
            finals = [ln for ln in out.getvalue().splitlines() if "\t" in ln and not ln.split("\t")[1].startswith("[")]
            for p, words in want.items():
                e = [ln for ln in errors if ln.startswith(f"omnisparse: error: {p}:")]
                t = [ln for ln in finals if ln.startswith(f"{p}\t")]
                if words:
                    res = ("failed_cleanly", e[0][-120:]) if len(e) == 1 and not t and words in e[0] else \
                        ("crashed", f"{e or t}"[-200:])  # not audio, yet no one-line error
                else:
                    res = ("recovered_as_designed", "transcribed") if len(t) == 1 and not e else \
                        ("lost", f"{e or t}"[-200:])  # audio, yet no transcript
                self.record("hostile_audio", f"{Path(p).name}{' --stream' if stream else ''}", lambda res=res: res)
            if rc != 1 or "Traceback" in err.getvalue():
                self.record("hostile_audio", "exit status", lambda rc=rc: ("crashed", f"rc {rc}"))

    # -------------------------------------------------------------------------------- export-onnx --overwrite
    def export_overwrite(self) -> None:
        from omnisparse.utils.faults import held_dir, tree_digest

        base = self.dir("overwrite")
        base.mkdir()
        notes = base / "notes"
        notes.mkdir()
        (notes / "keep.txt").write_text("mine")
        a_file = base / "file"
        a_file.write_text("x")
        prev = base / "prev-onnx"
        shutil.copytree(self.ref / "onnx", prev)
        prev_export = base / "prev-export"
        shutil.copytree(self.ref / "sparse-export", prev_export)
        cmds = {"export-onnx": ["export-onnx", str(self.ref / "sparse-export")],
                "export": ["export", str(self.ref / "dense"), "--sparsity", "0.5"]}

        def snapshot(p: Path):
            return tree_digest(p) if p.is_dir() else p.read_text()

        for target, words in ((notes, "already exists and is not empty"), (a_file, "is not a directory"),
                              (prev, "already exists and is not empty"), (prev_export, "already exists and is not empty")):
            for name, cmd in cmds.items():
                def case(cmd=cmd, target=target, words=words):
                    before = snapshot(target)
                    rc, _, err = self._cli(*cmd, "--out", str(target))
                    ok = rc == 2 and len(err) == 1 and words in err[0]
                    return verdict("failed_cleanly", ok, snapshot(target) == before), (err or [f"rc {rc}"])[0][-150:]
                self.record("export_overwrite", f"{name} into {target.name} without --overwrite", case)
        with held_dir(notes, "omnisparse train") as holder:
            for name, cmd in cmds.items():
                def held(cmd=cmd):
                    before = snapshot(notes)
                    rc, _, err = self._cli(*cmd, "--out", str(notes), "--overwrite")
                    ok = rc == 1 and len(err) == 1 and f"in use by pid {holder.pid}" in err[0]
                    return verdict("failed_cleanly", ok, snapshot(notes) == before), (err or [f"rc {rc}"])[0][-150:]
                self.record("export_overwrite", f"{name} --overwrite into a held directory", held)

        def replaced():
            rc, _, err = self._cli("export-onnx", str(self.ref / "sparse-export"), "--out", str(notes), "--overwrite")
            kept = (notes / "encoder.onnx").is_file() and not (notes / "keep.txt").exists() and not list(base.glob(".*tmp*"))
            return verdict("recovered_as_designed", rc == 0 and not err, kept), "replaced as a whole"
        self.record("export_overwrite", "export-onnx --overwrite into a non-empty directory", replaced)
