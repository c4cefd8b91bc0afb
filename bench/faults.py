"""Fault injection on the tiny preset: every fault class, several cases each, every outcome counted.

    OMP_NUM_THREADS=1 .venv/bin/python bench/faults.py [--seed 0] [--kills 4] [--fuzz 60] [--flips 150]
                                                      [--manifest-copies 3] [--work DIR]
                                                      [--soak-corpus data/small --soak-steps 8000 --soak-kills 10]
                                                      [--out bench/results/faults.json]

Builds the tiny corpus and reference runs (dense, supernet, pruning baseline, search, a micro corpus
build) in a temporary directory, then injects, with the mechanisms of ``omnisparse.utils.faults``
that ``tests/faults`` use:

* ``sigkill_{dense,supernet,prune,search,corpus}``: the real command in a child process, SIGKILLed
  once a checkpoint / search state / some audio files exist plus a random delay (kill points drawn
  from ``--seed``; one dense kill lands while a checkpoint is being written), then resumed;
* ``sigkill_ddp``: one worker (rank 0 or 1) of a 2-process ``torchrun`` DDP training (dense,
  supernet, dual mode) SIGKILLed after a checkpoint; torchrun must stop the job, and a second launch
  resume it to the uninterrupted DDP run's weights, bitwise;
* ``sigkill_ddp_elastic``: the same under ``torchrun --max-restarts=1``: torchrun restarts the
  workers, they resume from the last checkpoint, and the one launch ends with the same weights;
* ``ddp_mismatch``: rank 1 of a hand-launched 2-rank training sees another config, corpus or
  omnisparse code than rank 0: both refused at start in one line naming it, no run directory left;
* ``corrupt_checkpoint``: a random file of the newest checkpoint damaged (truncated, bits flipped,
  header zeroed, garbage), then resumed;
* ``bad_data``: one LibriSpeech utterance per fault of ``UTTERANCE_FAULTS`` beside good ones;
* ``numerical``: NaN input, inf / NaN gradient in one batch, or NaN from some step on;
* ``oom``: batches that run out of memory unless split, or always;
* ``disk_full``: ENOSPC while writing a checkpoint or a JSON state file;
* ``untrusted``: checkpoints / exports of another format version or model config, a pickle in
  place of safetensors;
* ``fuzz_{transcribe,text,features}``: random / damaged / odd audio files given to ``transcribe`` in
  one call, random text through the normaliser and tokenizer, random arrays through fbank;
* ``soak_kills`` (with ``--soak-corpus``): a real-sized training SIGKILLed ``--soak-kills`` times at
  random moments against the same training uninterrupted (``bench/fault_soak.py``);
* ``concurrent_writer``, ``state_bitflip``, ``hostile_{config,manifest,export,audio}``,
  ``export_overwrite``: another writer, digit flips of state files, hostile configs, cut manifests,
  exports and audio, ``export-onnx`` into occupied directories (``bench/fault_classes_hostile.py``).

Outcomes per case (``injected`` = their sum; a kill that came after the command had ended is not
counted, see ``kills_missed``):

* ``recovered_identical``: the result equals the uninterrupted run's (weights bitwise, Pareto table,
  corpus bytes, untouched files);
* ``recovered_as_designed``: handled and the work went on, with a result that legitimately differs
  (a skipped or split batch, a bad utterance skipped or fixed and counted, odd audio transcribed);
* ``failed_cleanly``: stopped with one ``omnisparse: error:`` line (and, for runs, a checkpoint that
  resumes to the uninterrupted result);
* ``lost``: a result, checkpoint or file that is not what it must be (target 0);
* ``crashed``: the process misbehaved with its data intact: a traceback, a signal death, a hang, a
  wrong exit status or error line (target 0). The case's detail says what happened
  (``bench/fault_outcomes.py`` holds the rule).

A checkpoint's ``state.json`` carries the checksum of its own content, so every damage is injected
there too (a bit flip inside a number included).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import defaultdict
from pathlib import Path
from unittest import mock

os.environ.setdefault("TQDM_DISABLE", "1")  # the runs' own bars; ours is enabled explicitly

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/: the fault classes' module
from fault_classes_hostile import HostileFaults  # noqa: E402
from fault_outcomes import DESCRIPTIONS, OUTCOMES, verdict  # noqa: E402
from fault_soak import SoakFaults  # noqa: E402

from omnisparse.cli import main as cli_main  # noqa: E402
from omnisparse.config import load_config  # noqa: E402
from omnisparse.utils.provenance import write_result  # noqa: E402

MICRO = ("micro", 10, 3, 3, 3)  # CorpusPreset fields: 19 utterances
DDP_STEPS = 6  # steps of every 2-rank DDP training (checkpoints every 2)
DDP_KINDS = {  # kind -> (command, extra overrides; {dense}: the reference dense run)
    "dense": (["train", "--config", "tiny"], []),
    "supernet": (["train", "--supernet", "--config", "supernet_tiny"],
                 ["--sparsity.init_from={dense}", "--sparsity.ramp_steps=4"]),
    "dual": (["train", "--dual-mode", "--config", "dual_tiny"],
             ["--data.dev_subset=4", "--dual.ramp_steps=2", "--dual.extra_sparsities=1"]),
}


def cli(*args: str) -> tuple[int, str, list[str]]:
    """``omnisparse ARGS`` in this process: (exit status, stdout, its ``omnisparse: error`` lines);
    a traceback raises (it is a crash)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli_main(list(args))
    lines = [ln for ln in err.getvalue().splitlines() if ln.startswith("omnisparse: error")]
    return rc, out.getvalue(), lines


def quiet(fn, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn(*a, **k)


class Bench(HostileFaults, SoakFaults):
    cli_fn = staticmethod(cli)
    quiet_fn = staticmethod(quiet)

    def __init__(self, work: Path, seed: int, corpus: Path | None):
        self.work, self.rng = work, random.Random(seed)
        self.corpus = corpus or work / "corpus"
        self.tally: dict[str, dict] = defaultdict(lambda: {**{o: 0 for o in OUTCOMES}, "hangs": 0, "kills_missed": 0,
                                                           "cases": []})
        self.n = 0

    # ------------------------------------------------------------------------------------ helpers
    def dir(self, name: str) -> Path:
        self.n += 1
        return self.work / f"{self.n:03d}-{name}"

    def args(self, out, *extra):
        return [f"--data.corpus_dir={self.corpus}", f"--train.out_dir={out}", "--train.threads=1",
                "--train.keep_last=0", "--train.ckpt_every=2", *extra]

    def cfg(self, preset, out, *extra):
        return load_config(preset, self.args(out, *extra))

    def record(self, cls: str, case: str, fn) -> None:
        t0, hang = time.time(), False
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                outcome, detail = fn()  # the runs' output and progress bars; ours was opened before
        except Exception as e:  # noqa: BLE001 - an unexpected exception is the thing we count
            outcome, detail = "crashed", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"[-600:]
            hang = isinstance(e, TimeoutError)  # run_killed's: a command outlived its timeout
        self.record_outcome(cls, case, outcome, detail, time.time() - t0, hang)

    def record_outcome(self, cls: str, case: str, outcome: str, detail, seconds: float, hang: bool = False) -> None:
        """Counts one case; a hang is also a crash."""
        t = self.tally[cls]
        t["hangs"] += hang
        if outcome == "missed":
            t["kills_missed"] += 1
        else:
            t[outcome] += 1
        t["cases"].append({"case": case, "outcome": outcome, "detail": str(detail)[:300], "seconds": round(seconds, 1)})

    # ------------------------------------------------------------------------------------ references
    def setup(self) -> None:
        from omnisparse.data.corpus import CorpusPreset, build_corpus
        from omnisparse.data.prepare import prepare_training_data
        from omnisparse.export.subnet import export_subnet
        from omnisparse.search.run import run_search
        from omnisparse.train.prune import prune
        from omnisparse.train.registry import train

        if not (self.corpus / "fbank" / "global_stats.json").exists():
            quiet(build_corpus, self.corpus, preset="tiny", seed=0, progress=False)
        quiet(prepare_training_data, self.corpus, ["train"], vocab_size=64)
        r = self.work / "ref"
        self.dense_args = ["--train.max_steps=8"]
        train(self.cfg("tiny", r / "dense", *self.dense_args))
        self.super_args = ["--train.max_steps=6", f"--sparsity.init_from={r / 'dense'}", "--sparsity.ramp_steps=4"]
        train(self.cfg("supernet_tiny", r / "supernet", *self.super_args), supernet=True)
        self.prune_args = ["--train.max_steps=8", f"--sparsity.init_from={r / 'dense'}", "--sparsity.prune_steps=4",
                           "--sparsity.prune_every=2"]
        prune(self.cfg("prune_tiny", r / "prune", *self.prune_args))
        self.ref_search = run_search(load_config("search_tiny", self.search_args(r / "search")), progress=False,
                                     tensorboard=False)
        self.micro = CorpusPreset(*MICRO)
        quiet(build_corpus, r / "micro", self.micro, seed=3, num_jobs=1, progress=False)
        quiet(export_subnet, r / "dense", "uniform:0", "fp32-dense", r / "export")
        train(self.cfg("tiny", r / "other", "--train.max_steps=2", "--model.d_model=48"))  # another model config
        from omnisparse.utils.faults import run_killed

        for kind in DDP_KINDS:
            ref_ddp = run_killed(self.torchrun(r / f"ddp-{kind}", kind), kill_when=lambda: False, timeout_s=600)
            if ref_ddp.returncode != 0:
                raise RuntimeError(f"the reference DDP {kind} run failed: {ref_ddp.output[-500:]}")
        self.ref = r
        self.setup_hostile()

    def search_args(self, out):
        return [f"--data.corpus_dir={self.corpus}", f"--search.supernet={self.work / 'ref' / 'supernet'}",
                f"--search.out_dir={out}", "--search.generations=4", "--search.dev_subset=4", "--train.threads=1"]

    def same_weights(self, kind: str, run: Path, step: int) -> bool:
        from omnisparse.utils.faults import weights_equal

        name = f"ckpt-{step:08d}/model.safetensors"
        return (run / name).exists() and weights_equal(self.ref / kind / name, run / name)

    # ------------------------------------------------------------------------------------ SIGKILL
    def kill_train(self, kind: str, preset: str, extra: list[str], max_step: int, while_writing: bool = False):
        from omnisparse.train.prune import prune
        from omnisparse.train.registry import train
        from omnisparse.utils.faults import checkpoint_exists, omnisparse_cmd, run_killed

        run = self.dir(f"kill-{kind}")
        cmd = {"dense": ["train"], "supernet": ["train", "--supernet"], "prune": ["prune"]}[kind]
        cmd = omnisparse_cmd(*cmd, "--config", preset, *self.args(run, *extra))
        if while_writing:
            when, delay, point = (run / ".ckpt-00000004.tmp").exists, 0.0, "while writing ckpt 4"
        else:
            step = self.rng.choice(range(2, max_step, 2))
            delay = self.rng.uniform(0.0, 0.5)
            when, point = checkpoint_exists(run, step), f"ckpt {step} + {delay:.2f} s"

        def case():
            res = run_killed(cmd, kill_when=when, delay_s=delay, poll_s=0.001 if while_writing else 0.005)
            if not res.killed:
                return "missed", f"{point}: ended first (rc {res.returncode})"
            cfg = self.cfg(preset, run, *extra)
            quiet(prune, cfg) if kind == "prune" else train(cfg, supernet=kind == "supernet")
            ok = self.same_weights(kind, run, max_step) and not list(run.glob(".ckpt-*.tmp"))
            return verdict("recovered_identical", kept=ok), point
        self.record(f"sigkill_{kind}", point, case)

    def torchrun(self, out: Path, kind: str = "dense", restarts: int = 0) -> list[str]:
        """A 2-process gloo DDP training of :data:`DDP_KINDS` ``kind`` into ``out`` (a port of its own per
        launch); ``restarts``: torchrun's ``--max-restarts`` (an elastic launch restarts the workers
        after one dies, and they resume from the last checkpoint)."""
        return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={self.next_port()}",
                f"--max-restarts={restarts}", "-m", "omnisparse.cli", *self.ddp_args(out, kind)]

    def next_port(self) -> int:
        """A rendezvous port no earlier launch of this bench used."""
        self.port = getattr(self, "port", 29600) + 1
        return self.port

    def ddp_args(self, out: Path, kind: str) -> list[str]:
        command, extra = DDP_KINDS[kind]
        extra = [a.format(dense=self.work / "ref" / "dense") for a in extra]
        return [*command, *self.args(out, f"--train.max_steps={DDP_STEPS}", *extra)]

    def kill_ddp(self, kind: str = "dense", elastic: bool = False):
        """SIGKILL one worker of a DDP ``kind`` run after a checkpoint. Plain torchrun must stop the job
        (no hang, no half checkpoint, no live lock) and a second launch resume it to the uninterrupted
        result; an elastic launch (``--max-restarts=1``) restarts the workers itself and ends with it."""
        from omnisparse.io.lock import read_lock
        from omnisparse.utils.faults import checkpoint_exists, run_killed, weights_equal

        run = self.dir(f"kill-ddp-{kind}")
        rank, step, delay = self.rng.randint(0, 1), self.rng.choice((2, 4)), self.rng.uniform(0.0, 0.5)
        point = f"{kind}{' (elastic)' if elastic else ''}: rank {rank}, ckpt {step} + {delay:.2f} s"
        final = f"ckpt-{DDP_STEPS:08d}/model.safetensors"

        def case():
            res = run_killed(self.torchrun(run, kind, restarts=int(elastic)), kill_when=checkpoint_exists(run, step),
                             delay_s=delay, timeout_s=300, rank=rank)
            if not res.killed:
                return "missed", f"{point}: ended first (rc {res.returncode})"
            if elastic:
                done = res
            else:
                if res.returncode == 0:
                    return "crashed", f"{point}: the job exited 0 without a worker"
                held = read_lock(run)
                if rank == 1 and held is not None:
                    return "crashed", f"{point}: rank 0 left its lock behind: {held}"
                done = run_killed(self.torchrun(run, kind), kill_when=lambda: False, timeout_s=300)
            behaved = done.returncode == 0
            same = lambda: weights_equal(self.ref / f"ddp-{kind}" / final, run / final)  # noqa: E731
            what = "restarted by torchrun" if elastic else f"stopped after {res.seconds:.0f} s, relaunched"
            return verdict("recovered_identical", behaved, kept=not list(run.glob(".ckpt-*.tmp")), result=same), \
                f"{point}; {what} (rc {done.returncode})"
        self.record("sigkill_ddp_elastic" if elastic else "sigkill_ddp", point, case)

    def ddp_mismatch(self, what: str):
        """Rank 1 of a 2-rank training (launched by hand, as on two nodes) sees another config, corpus or
        code than rank 0: every rank refused at start with one line naming it, no run directory left."""
        from omnisparse.data.layout import CorpusLayout
        from omnisparse.utils.faults import run_ranks
        from omnisparse.utils.hostile_inputs import read_manifest_rows, write_manifest_rows

        run = self.dir(f"ddp-mismatch-{what}")
        other, env = self.args(run, "--train.max_steps=2"), {}
        if what == "config":
            other.append("--train.lr=0.002")
        elif what == "corpus":
            corpus = self.dir("ddp-mismatch-corpus")
            shutil.copytree(CorpusLayout(self.corpus).manifests, CorpusLayout(corpus).manifests)
            dev = CorpusLayout(corpus).cuts("dev")
            write_manifest_rows(dev, read_manifest_rows(dev)[1:])  # one dev utterance fewer
            other.append(f"--data.corpus_dir={corpus}")
        else:
            code = self.dir("ddp-mismatch-code")
            shutil.copytree(Path(__file__).resolve().parents[1] / "src" / "omnisparse", code / "omnisparse",
                            ignore=shutil.ignore_patterns("__pycache__"))
            with open(code / "omnisparse" / "cli.py", "a") as f:
                f.write("# another version\n")
            env = {"PYTHONPATH": str(code)}
        port = self.next_port()

        def case():
            got = run_ranks([["train", "--config", "tiny", *self.args(run, "--train.max_steps=2")],
                             ["train", "--config", "tiny", *other]], port=port, env_per_rank=[{}, env])
            ok = all(rc == 1 and len(err) == 1 and f"rank 1: {what} differ" in err[0] for rc, err in got)
            return verdict("failed_cleanly", ok, not run.exists()), str(got[0][1][:1])[-160:]
        self.record("ddp_mismatch", f"rank 1 sees another {what}", case)

    def kill_search(self):
        from omnisparse.search.run import run_search
        from omnisparse.utils.faults import omnisparse_cmd, run_killed

        out = self.dir("kill-search")
        delay = self.rng.uniform(0.0, 1.0)
        point = f"state.json + {delay:.2f} s"

        def case():
            for tries in range(3):  # the tiny search lasts ~1 s past its first state: on a faster machine
                # the drawn delay can outlast it; a shorter one then, from scratch
                shutil.rmtree(out, ignore_errors=True)
                d = delay / 4 ** tries
                res = run_killed(omnisparse_cmd("search", "--config", "search_tiny", *self.search_args(out)),
                                 kill_when=(out / "state.json").exists, delay_s=d)
                if res.killed:
                    break
            else:
                return "missed", f"{point}: ended first, 3 times"
            got = run_search(load_config("search_tiny", self.search_args(out)), progress=False, tensorboard=False)
            same = got["table"] == self.ref_search["table"] and got["pareto"] == self.ref_search["pareto"]
            return verdict("recovered_identical", kept=same), f"state.json + {d:.2f} s"
        self.record("sigkill_search", point, case)

    def kill_corpus(self):
        from omnisparse.data.corpus import build_corpus
        from omnisparse.utils.faults import run_killed, tree_digest

        out = self.dir("kill-corpus")
        files, delay = self.rng.randint(1, 15), self.rng.uniform(0.0, 0.3)
        point = f"{files} flac files + {delay:.2f} s"
        code = ("import sys; from omnisparse.data.corpus import CorpusPreset, build_corpus; "
                f"build_corpus(sys.argv[1], CorpusPreset{MICRO!r}, seed=3, num_jobs=2, progress=False)")

        def case():
            res = run_killed([sys.executable, "-c", code, str(out)], delay_s=delay,
                             kill_when=lambda: len(list((out / "audio").rglob("*.flac"))) >= files)
            if not res.killed:
                return "missed", f"{point}: ended first"
            quiet(build_corpus, out, self.micro, seed=3, num_jobs=1, progress=False)
            same = tree_digest(out / "audio") == tree_digest(self.ref / "micro" / "audio")
            for split in ("train", "dev", "test-clean", "test-other"):
                a, b = (self.ref / "micro" / "manifests" / f"cuts_{split}.jsonl.gz"), out / "manifests" / f"cuts_{split}.jsonl.gz"
                same = same and _manifest(a, self.ref / "micro") == _manifest(b, out)
            return verdict("recovered_identical", kept=same), point
        self.record("sigkill_corpus", point, case)

    # ------------------------------------------------------------------------------------ corrupt checkpoint
    def corrupt_checkpoint(self):
        from omnisparse.train.registry import train
        from omnisparse.utils.faults import DAMAGES, damage_file

        name = self.rng.choice(["model.safetensors", "optimizer.safetensors", "state.json", "tokenizer.model",
                                "global_stats.json"])
        kind = self.rng.choice(DAMAGES)
        seed = self.rng.randrange(2**31)
        point = f"{kind} {name} of the newest checkpoint"

        def case():
            run = self.dir("corrupt")
            shutil.copytree(self.ref / "dense", run)
            shutil.rmtree(run / "ckpt-00000008")  # interrupted after step 6's checkpoint, which was then damaged
            damage_file(run / "ckpt-00000006" / name, kind, seed)
            train(self.cfg("tiny", run, *self.dense_args))
            return verdict("recovered_identical", kept=self.same_weights("dense", run, 8)), point
        self.record("corrupt_checkpoint", point, case)

    # ------------------------------------------------------------------------------------ bad data
    def bad_data(self, fault: str):
        from lhotse import load_manifest

        from omnisparse.data.features import prepare_features
        from omnisparse.data.layout import CorpusLayout
        from omnisparse.data.librispeech import prepare_librispeech
        from omnisparse.utils.faults import UTTERANCE_FAULTS, plant_utterance

        def case():
            root = self.dir(f"bad-{fault}")
            d = root / "LibriSpeech" / "dev-clean" / "1089" / "134691"
            d.mkdir(parents=True)
            cuts = list(load_manifest(CorpusLayout(self.corpus).cuts("dev")).subset(first=4))
            lines = [plant_utterance(d / f"1089-134691-{i:04d}.flac", c.recording.sources[0].source,
                                     c.supervisions[0].text, fault if i == 3 else None, long_s=20.0)
                     for i, c in enumerate(cuts)]
            (d / "1089-134691.trans.txt").write_text("\n".join(lines) + "\n")
            out = root / "corpus"
            parsed = quiet(prepare_librispeech, root, out)["dev-clean"]
            rep = quiet(prepare_features, out, ["dev-clean"], num_jobs=1, max_duration=15.0)["dev-clean"]
            counted = sum(parsed["skipped"].values()) + sum(parsed["fixed"].values()) + sum(rep.counts.values())
            stored = {c.id.split("-")[2] for c in load_manifest(CorpusLayout(out).feature_cuts("dev-clean"))}
            want = {"0000", "0001", "0002"} | ({"0003"} if UTTERANCE_FAULTS[fault] == "fix" else set())
            what = f"{UTTERANCE_FAULTS[fault]}: {parsed['skipped'] | parsed['fixed'] | dict(rep.counts)}"
            ok = counted == 1 and stored == want
            return verdict("recovered_as_designed", kept=ok), what
        self.record("bad_data", fault, case)

    # ------------------------------------------------------------------------------------ NaN / OOM
    def numerical(self, fault: str):
        from omnisparse.train.registry import train
        from omnisparse.train.trainer import Trainer

        at = self.rng.randint(1, 6)  # the bad batch (1-based train_step call)
        orig_step, orig_fb = Trainer.train_step, Trainer.forward_backward
        calls = {"n": 0}

        def one_bad(tr, batch):
            calls["n"] += 1
            if calls["n"] == at and fault == "nan_input":
                batch = {**batch, "feats": batch["feats"].clone().fill_(float("nan"))}
            metrics = orig_step(tr, batch)
            if calls["n"] == at and fault in ("inf_grad", "nan_grad"):
                p = next(p for p in tr.model.parameters() if p.grad is not None)
                p.grad.view(-1)[0] = float("inf") if fault == "inf_grad" else float("nan")
            return metrics

        def diverged(tr, batch, mode):
            return (float("nan"), {}) if tr.step >= at else orig_fb(tr, batch, mode)

        def case():
            run = self.dir(f"num-{fault}")
            if fault == "nan_from_step":
                return self.stop_then_resume(run, mock.patch.object(Trainer, "forward_backward", diverged),
                                             "non-finite")
            with mock.patch.object(Trainer, "train_step", one_bad):
                out = train(self.cfg("tiny", run, *self.dense_args))
            ok = out["step"] == 8 and out["cost"].get("skipped_by_reason") == {"non_finite": 1}
            return verdict("recovered_as_designed", kept=ok), f"batch {at}: {out['cost'].get('skipped_by_reason')}"
        self.record("numerical", f"{fault} at {at}", case)

    def stop_then_resume(self, run: Path, patch, words: str):
        """The fault, through the command line: exit 1 and one line naming the last checkpoint; then
        the cause removed, resumed to the uninterrupted result."""
        from omnisparse.train.registry import train

        with patch:
            rc, _, err = cli("train", "--config", "tiny", *self.args(run, *self.dense_args, "--train.max_bad_steps=3"))
        clean = rc == 1 and len(err) == 1 and words in err[0] and ("last good checkpoint" in err[0] or "no checkpoint" in err[0])
        train(self.cfg("tiny", run, *self.dense_args))
        return verdict("failed_cleanly", clean, self.same_weights("dense", run, 8)), (err or [f"rc {rc}"])[0][-200:]

    def oom(self, fault: str):
        from omnisparse.train.registry import train
        from omnisparse.train.trainer import Trainer

        limit = self.rng.randint(2, 4)  # batches of more than `limit` utterances "run out of memory"
        at = self.rng.randint(1, 6)
        orig = Trainer.train_step

        def small_memory(tr, batch):
            if len(batch["ids"]) > limit:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return orig(tr, batch)

        def gone(tr, batch):
            if tr.step >= at:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return orig(tr, batch)

        def case():
            run = self.dir(f"oom-{fault}")
            if fault == "always_from_step":
                return self.stop_then_resume(run, mock.patch.object(Trainer, "train_step", gone), "out of memory")
            with mock.patch.object(Trainer, "train_step", small_memory):
                out = train(self.cfg("tiny", run, *self.dense_args, "--train.max_bad_steps=50"))
            c = out["cost"]
            ok = out["step"] == 8 and c.get("oom_batches", 0) >= 1 and \
                c.get("oom_split_batches", 0) + c.get("skipped_by_reason", {}).get("out_of_memory", 0) == c["oom_batches"]
            return verdict("recovered_as_designed", kept=ok), \
                f"> {limit} utts: {c.get('oom_batches')} OOM, {c.get('oom_split_batches', 0)} split"
        self.record("oom", f"{fault} ({limit}, {at})", case)

    # ------------------------------------------------------------------------------------ disk full
    def disk_full(self, target: str):
        from omnisparse.io import atomic
        from omnisparse.io import checkpoint as ck
        from omnisparse.train.registry import train
        from omnisparse.utils.faults import disk_full

        after = self.rng.randint(1, 6)  # file writes that still succeed

        def case():
            run = self.dir(f"disk-{target}")
            if target == "atomic_write_text":
                path = run / "state.json"
                atomic.atomic_write_text(path, "old")
                with mock.patch.object(atomic.os, "fsync", disk_full(atomic.os.fsync)):
                    try:
                        atomic.atomic_write_text(path, "new")
                        return "lost", "no error raised"
                    except OSError:
                        pass
                ok = path.read_text() == "old" and [p.name for p in run.iterdir()] == ["state.json"]
                return verdict("failed_cleanly", kept=ok), "OSError(ENOSPC), old file intact"
            with mock.patch.object(ck, target, disk_full(getattr(ck, target), after=after)):
                rc, _, err = cli("train", "--config", "tiny", *self.args(run, *self.dense_args))
            clean = rc == 1 and len(err) == 1 and ("No space left" in err[0])
            no_tmp = not list(run.glob(".ckpt-*"))
            train(self.cfg("tiny", run, *self.dense_args))  # space freed
            kept = no_tmp and self.same_weights("dense", run, 8)
            return verdict("failed_cleanly", clean, kept), (err or [f"rc {rc}"])[0][-160:]
        self.record("disk_full", f"{target} after {after}", case)

    # ------------------------------------------------------------------------------------ untrusted files
    def untrusted(self, kind: str):
        import pickle

        from omnisparse.io import checkpoint as ck
        from omnisparse.utils.faults import tree_digest

        def case():
            d = self.dir(f"untrusted-{kind}")
            if kind == "export_version":
                shutil.copytree(self.ref / "export", d)
                meta = json.loads((d / "meta.json").read_text())
                meta["export_version"] = 2
                (d / "meta.json").write_text(json.dumps(meta))
                target, words = d, "export layout version 2"
            elif kind == "resume_other_config":
                shutil.copytree(self.ref / "dense", d)
                target, words = d, "another model config"
            else:
                shutil.copytree(self.ref / "dense" / "ckpt-00000008", d / "ckpt-00000008")
                c = d / "ckpt-00000008"
                state = json.loads((c / "state.json").read_text())
                if kind == "format_version":
                    state["format_version"], words = 2, "format version 2"
                else:
                    if kind == "other_config_weights":
                        shutil.copy(self.ref / "other" / "ckpt-00000002" / "model.safetensors", c / "model.safetensors")
                        words = "weights do not match"
                    else:  # a pickle in place of safetensors
                        (c / "model.safetensors").write_bytes(pickle.dumps({"w": list(range(10))}))
                        words = "not a readable safetensors file"
                    state["sha256"]["model.safetensors"] = ck.sha256(c / "model.safetensors")
                ck.write_state(c, state)
                target = d
            before = tree_digest(d)
            if kind == "resume_other_config":
                rc, _, err = cli("train", "--config", "tiny", *self.args(d, *self.dense_args, "--model.d_model=48"))
            else:
                rc, _, err = cli("eval", str(target), "--splits", "dev")
            after = tree_digest(d)
            untouched = all(after.get(k) == v for k, v in before.items())  # new files (logs) are allowed
            ok = rc == 2 and len(err) == 1 and words in err[0]
            return verdict("failed_cleanly", ok, untouched), (err or [f"rc {rc}"])[0][-200:]
        self.record("untrusted", kind, case)

    # ------------------------------------------------------------------------------------ fuzz
    def fuzz_transcribe(self, n: int, seed: int):
        import soundfile as sf
        from lhotse import load_manifest

        from omnisparse.data.layout import CorpusLayout
        from omnisparse.utils.faults import DAMAGES, damage_file

        rng = np.random.default_rng(seed)
        d = self.dir("fuzz-transcribe")
        d.mkdir(parents=True)
        srcs = [c.recording.sources[0].source for c in load_manifest(CorpusLayout(self.corpus).cuts("dev")).subset(first=8)]
        files, kinds = [], {}
        for i in range(n):
            kind = ("random_bytes", "damaged", "odd_valid")[i % 3]
            if kind == "random_bytes":
                p = d / f"{i:03d}{rng.choice(['.wav', '.flac', '.mp3', ''])}"
                p.write_bytes(rng.integers(0, 256, int(rng.integers(0, 4096)), dtype=np.uint8).tobytes())
            elif kind == "damaged":
                p = d / f"{i:03d}.flac"
                shutil.copy(srcs[i % len(srcs)], p)
                damage_file(p, str(rng.choice(DAMAGES)), int(rng.integers(2**31)))
            else:
                p = d / f"{i:03d}.wav"
                rate, ch, frames = int(rng.choice([8000, 11025, 16000, 22050, 48000])), int(rng.integers(1, 4)), int(rng.integers(0, 8000))
                x = rng.uniform(-1, 1, (frames, ch)).astype(np.float32)
                if frames and rng.random() < 0.3:
                    x[int(rng.integers(frames)), 0] = rng.choice([np.nan, np.inf, 3e38])
                sf.write(p, x, rate, subtype="FLOAT")
            files.append(p)
            kinds[str(p)] = kind

        out, err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = cli_main(["transcribe", str(self.ref / "dense"), *map(str, files)])
        except Exception as e:  # noqa: BLE001
            for p in files:
                self.record("fuzz_transcribe", kinds[str(p)], lambda e=e: ("crashed", repr(e)))
            return
        errors = [ln for ln in err.getvalue().splitlines() if ln.startswith("omnisparse: error")]
        texts = [ln for ln in out.getvalue().splitlines() if "\t" in ln]
        for p in files:
            e = [ln for ln in errors if ln.startswith(f"omnisparse: error: {p}:")]
            t = [ln for ln in texts if ln.startswith(f"{p}\t")]
            if len(e) + len(t) != 1 or "Traceback" in err.getvalue():
                res = ("crashed", f"{len(e)} errors, {len(t)} transcripts")
            else:
                res = ("failed_cleanly", e[0][-120:]) if e else ("recovered_as_designed", "transcribed")
            self.record("fuzz_transcribe", kinds[str(p)], lambda res=res: res)
        if (rc != 0) != bool(errors):
            self.record("fuzz_transcribe", "exit status", lambda: ("crashed", f"rc {rc} with {len(errors)} errors"))

    def fuzz_text_and_features(self, n: int, seed: int):
        import re

        from omnisparse.data.features import NUM_MEL_BINS, fbank
        from omnisparse.data.layout import CorpusLayout
        from omnisparse.data.text import normalize_text
        from omnisparse.data.tokenizer import Tokenizer

        rng = np.random.default_rng(seed)
        tok = Tokenizer(CorpusLayout(self.corpus).bpe_model(64))
        alphabet = list("abcxyzABCXYZ0123456789 .,;:'\"-$%&\u2019\u2014\u00e9\u00df\u00bd\u6771\u0301\n\t") + ["mr", "Dr.", "etc", "1st"]
        pattern = re.compile(r"[a-z]+(?:'[a-z]+)*(?: [a-z]+(?:'[a-z]+)*)*")
        for _ in range(n):
            s = "".join(rng.choice(alphabet, int(rng.integers(0, 40))))

            def text_case(s=s):
                out = normalize_text(s)
                if out is None:
                    return "failed_cleanly", "nothing word-like: None"
                ok = bool(pattern.fullmatch(out)) and normalize_text(out) == out and tok.decode(tok.encode(out)) == out
                return verdict("recovered_as_designed", kept=ok), repr(s)[:80]
            self.record("fuzz_text", "random text", text_case)

            size = int(rng.integers(0, 3000))
            x = rng.normal(0, float(rng.choice([1e-6, 0.1, 1.0, 1e6, 1e30])), size)
            if size and rng.random() < 0.3:
                x[int(rng.integers(size))] = rng.choice([np.nan, np.inf, -np.inf])
            if rng.random() < 0.15:
                x = np.stack([x, x])

            def feat_case(x=x):
                try:
                    f = fbank(x)
                except ValueError as e:
                    return "failed_cleanly", str(e)[:100]
                ok = f.shape[1] == NUM_MEL_BINS and bool(torch.isfinite(f).all())
                return verdict("recovered_as_designed", kept=ok), f"shape {tuple(f.shape)}"
            self.record("fuzz_features", f"{x.shape}", feat_case)


def _manifest(path: Path, root: Path) -> list[str]:
    import gzip

    with gzip.open(path, "rt") as f:
        return f.read().replace(str(root.resolve()), "ROOT").splitlines()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0, help="draws the kill points, damages and fuzz inputs")
    ap.add_argument("--kills", type=int, default=4, help="SIGKILL cases per kind (dense: one more, killed while writing)")
    ap.add_argument("--fuzz", type=int, default=60, help="files given to transcribe (texts/arrays: 4x)")
    ap.add_argument("--flips", type=int, default=150, help="digit flips of a checkpoint's state.json (search: 2/3)")
    ap.add_argument("--manifest-copies", type=int, default=3, help="copies of each hostile manifest line per manifest")
    ap.add_argument("--corpus", default=None, help="an existing tiny corpus (default: built in the work dir)")
    ap.add_argument("--work", default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--soak-corpus", default=None, help="a built corpus for the soak (e.g. data/small; default: no soak)")
    ap.add_argument("--soak-preset", default="small", help="the soaked training's preset")
    ap.add_argument("--soak-steps", type=int, default=8000,
                    help="steps of the soaked training (small on 2 cores: 4,000 steps took 18 min here, so ~35, room for 10 kills)")
    ap.add_argument("--soak-kills", type=int, default=10, help="SIGKILLs of the soaked training")
    ap.add_argument("--out", default="bench/results/faults.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    t0 = time.time()
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faults-")))
        work.mkdir(parents=True, exist_ok=True)
        b = Bench(work, args.seed, Path(args.corpus) if args.corpus else None)
        from omnisparse.utils.faults import UTTERANCE_FAULTS

        cases = [lambda: b.kill_train("dense", "tiny", b.dense_args, 8, while_writing=True)]
        for kind, preset, max_step in (("dense", "tiny", 8), ("supernet", "supernet_tiny", 6), ("prune", "prune_tiny", 8)):
            cases += [lambda k=kind, p=preset, m=max_step: b.kill_train(k, p, getattr(b, {"dense": "dense_args", "supernet": "super_args", "prune": "prune_args"}[k]), m)] * args.kills
        cases += [lambda k=k: b.kill_ddp(k) for k in DDP_KINDS for _ in range(args.kills // 2 if k != "dense" else args.kills)]
        cases += [lambda k=k: b.kill_ddp(k, elastic=True) for k in DDP_KINDS]
        cases += [lambda w=w: b.ddp_mismatch(w) for w in ("config", "corpus", "code")]
        cases += [b.kill_search] * args.kills + [b.kill_corpus] * args.kills + [b.corrupt_checkpoint] * 6
        cases += [lambda f=f: b.bad_data(f) for f in UTTERANCE_FAULTS]
        cases += [lambda f=f: b.numerical(f) for f in ("nan_input", "inf_grad", "nan_grad", "nan_from_step")]
        cases += [lambda f=f: b.oom(f) for f in ("split_in_halves", "always_from_step")]
        cases += [lambda t=t: b.disk_full(t) for t in ("save_file", "save_file", "_fsync_file", "atomic_write_text")]
        cases += [lambda k=k: b.untrusted(k) for k in ("format_version", "export_version", "other_config_weights",
                                                     "pickle_as_safetensors", "resume_other_config")]
        cases += [lambda: b.fuzz_transcribe(args.fuzz, args.seed), lambda: b.fuzz_text_and_features(4 * args.fuzz, args.seed)]
        cases += [b.concurrent_writer, lambda: b.state_bitflip(args.flips, 2 * args.flips // 3), b.hostile_config,
                  lambda: b.hostile_manifest(args.manifest_copies), b.hostile_export, b.hostile_audio, b.export_overwrite]
        if args.soak_corpus:
            cases.append(lambda: b.soak(Path(args.soak_corpus).resolve(), args.soak_preset, args.soak_steps, args.soak_kills))
        bar = tqdm(total=len(cases) + 1, desc="faults", disable=False, dynamic_ncols=True)
        bar.set_postfix_str("setup: tiny corpus + reference runs")
        quiet(b.setup)
        bar.update(1)
        for case in cases:
            case()
            bad = {o: sum(t[o] for t in b.tally.values()) for o in ("lost", "crashed")}
            bar.set_postfix_str(f"{sum(sum(t[o] for o in OUTCOMES) for t in b.tally.values())} injected, "
                                f"{bad['lost']} lost, {bad['crashed']} crashed")
            bar.update(1)
        bar.close()
    classes = {}
    for name, t in sorted(b.tally.items()):
        classes[name] = {"injected": sum(t[o] for o in OUTCOMES), **{o: t[o] for o in OUTCOMES},
                         "hangs": t["hangs"], "kills_missed": t["kills_missed"], "cases": t["cases"]}
    totals = {k: sum(c[k] for c in classes.values()) for k in ("injected", *OUTCOMES, "hangs", "kills_missed")}
    payload = {"preset": "tiny", "seed": args.seed, "threads": 1, "wall_s": round(time.time() - t0, 1),
               "outcomes": DESCRIPTIONS,
               "totals": totals, "classes": classes, "soak": b.soak_summary}
    write_result(args.out, payload, command="bench/faults.py " + " ".join(sys.argv[1:]))
    heads = {"injected": "injected", "recovered_identical": "identical", "recovered_as_designed": "designed",
             "failed_cleanly": "clean", "lost": "lost", "crashed": "crashed", "hangs": "hangs"}
    print(f"{'class':<20}" + "".join(f" {h:>9}" for h in heads.values()))
    for name, c in [*classes.items(), ("total", totals)]:
        print(f"{name:<20}" + "".join(f" {c[k]:9d}" for k in heads))
    print(f"({totals['kills_missed']} kills missed) -> {args.out} in {payload['wall_s']:.0f} s")

if __name__ == "__main__":
    main()
