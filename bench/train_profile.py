"""Where a training step's time goes, and how much audio per wall second each speed lever buys.

    .venv/bin/python bench/train_profile.py --corpus data/small [--preset small] [--batches 8]
        [--repeats 2] [--warmup 1] [--threads 2] [--variants today,vocab_128,...,v2]
        [--out bench/results/train_profile.json]

Recipes are pinned here, on top of ``omnisparse/conf/<preset>.yaml`` (architecture, SpecAugment, cut limits)
pointed at ``--corpus``, so that the comparison does not move when the preset file does:

* ``today``: the recipe of ``omnisparse/conf/small.yaml`` up to commit 57f30d2 - 256-piece BPE, stateless
  predictor (context 2), full RNN-T loss (fused joiner), 60 s batches, 10 duration buckets;
* one lever changed at a time: ``vocab_128`` (128-piece BPE: smaller joint and CTC head, U grows a
  little), ``lstm_predictor`` (``model.pred_type=lstm``), ``pruned`` (``model.loss=pruned``: k2 pruned
  RNN-T, the tanh joiner on 5 symbols per frame instead of U+1, :mod:`omnisparse.losses.pruned`),
  ``buckets_30`` (30 duration buckets: fewer padded frames), ``batch_30s`` (30 s batches),
  ``no_dropout`` (``model.dropout=0``: not a recipe, the price of dropout's random masks on CPU);
  opt-in: ``compile_encoder`` (``torch.compile(encoder, dynamic=True)``) and ``bf16_autocast`` (the
  encoder under ``torch.autocast("cpu", torch.bfloat16)``; default only on CPUs with native bf16);
* ``pruned_simple_proj``: ``pruned`` whose simple joint has heads of its own (``model.simple_proj``);
* ``v2_core`` = vocab_128 + lstm_predictor + pruned, ``v2`` = v2_core + buckets_30;
  ``v2_core_fused_lstm``: v2_core with the LSTM predictor's forward run by ``torch.lstm`` (one C++
  call over U+1 steps, same weights and gate order, masks honoured) instead of the Python loop over
  steps of :class:`PrunableLSTMLayer`: a change the library does not have yet, measured here by
  replacing that one model's ``predictor.forward``;
  ``preset``: ``omnisparse/conf/<preset>.yaml`` as it stands (its augmentation is not applied: batches are drawn
  before timing, data loading is not timed); ``preset_ddp2x1``: the preset trained as ``torchrun
  --nproc_per_node=2 ... --train.threads=1`` trains it, two gloo DDP processes of one thread each
  (:class:`RankPool`; each rank its own batches, a step's audio is both ranks'; no per-part split);
  ``preset_bf16`` / ``preset_ddp2x1_bf16``: the same with ``train.autocast=bf16`` (the encoder in bf16,
  as the trainer runs it; default only on CPUs with native bf16, like ``bf16_autocast``);
* ``today_again``: ``today`` once more, timed with the others: its ratio to ``today`` is the noise floor.

Variants with the same data settings get the very same batches (same sampler seed, SpecAugment on).
They are timed **round-robin**, one batch each in turn, the order reversed every other round, so
that the load of a shared machine falls on all alike: only ratios from one run mean anything. Each
batch runs ``--repeats`` times in a row and counts its fastest run (a load spike hits one repeat);
the first ``--warmup`` rounds are not timed. Per step:

* ``enc_fwd`` / ``enc_bwd``: subsampling + conformer blocks (+ CTC head and loss when enabled);
* ``joint_fwd`` / ``joint_bwd``: predictor, joiner projections and the RNN-T loss (full fused, or
  simple + pruned);
* ``step``: gradient clipping and the optimizer update.

The encoder backward is timed apart by cutting the graph at the encoder output (``enc`` is
detached, the joint's gradient w.r.t. it is pushed back through the encoder afterwards), so the
parts add up to one real training step. Reports seconds per step, audio seconds per wall second,
each part's share, padding (share of padded fbank frames, audio-weighted), parameters, and each
variant's audio seconds per wall second over ``today``'s (``speedup_vs_today``).

Measured on the 2-core AVX2 EPYC (loaded by other jobs): ``torch.compile`` of the encoder took
12 min for the first two batch shapes and 4-6 min for each new one (B and T vary per batch; they
recompile even with ``dynamic=True``) and was not faster once compiled; bf16 autocast without
native bf16 made the encoder's fwd+bwd ~8x slower. Hence both are opt-in.
"""

from __future__ import annotations

import argparse
import copy
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from omnisparse.config import load_config
from omnisparse.data.batching import AsrDataset, SpecAugmentConfig, make_loader, make_sampler
from omnisparse.data.features import FeatureNormalizer
from omnisparse.data.layout import CorpusLayout
from omnisparse.data.prepare import prepare_training_data
from omnisparse.data.splits import load_split_cuts
from omnisparse.data.tokenizer import Tokenizer
from omnisparse.losses.transducer import TransducerLoss
from omnisparse.models.transducer import Transducer, add_blank_prefix
from omnisparse.utils.provenance import write_result

TODAY = {"data.vocab_size": 256, "data.max_duration": 60.0, "data.num_buckets": 10,
         "model.pred_type": "stateless", "model.pred_context": 2, "model.loss": "full"}
V2_CORE = {**TODAY, "data.vocab_size": 128, "model.pred_type": "lstm", "model.loss": "pruned"}

VARIANTS: dict[str, dict[str, Any]] = {
    "today": {"overrides": TODAY},
    "vocab_128": {"overrides": {**TODAY, "data.vocab_size": 128}},
    "lstm_predictor": {"overrides": {**TODAY, "model.pred_type": "lstm"}},
    "pruned": {"overrides": {**TODAY, "model.loss": "pruned"}},
    "pruned_simple_proj": {"overrides": {**TODAY, "model.loss": "pruned", "model.simple_proj": True}},
    "buckets_30": {"overrides": {**TODAY, "data.num_buckets": 30}},
    "batch_30s": {"overrides": {**TODAY, "data.max_duration": 30.0}},
    "no_dropout": {"overrides": {**TODAY, "model.dropout": 0.0}},
    "compile_encoder": {"overrides": TODAY, "compile": True},
    "bf16_autocast": {"overrides": TODAY, "bf16": True},
    "v2_core": {"overrides": V2_CORE},
    "v2": {"overrides": {**V2_CORE, "data.num_buckets": 30}},
    "v2_core_fused_lstm": {"overrides": V2_CORE, "fused_lstm": True},
    "preset": {"overrides": {}},
    "preset_ddp2x1": {"overrides": {}, "ranks": 2},
    "preset_bf16": {"overrides": {"train.autocast": "bf16"}},
    "preset_ddp2x1_bf16": {"overrides": {"train.autocast": "bf16"}, "ranks": 2},
    "today_again": {"overrides": TODAY},
}
OPT_IN = ("compile_encoder", "bf16_autocast", "preset_bf16", "preset_ddp2x1_bf16")
PARTS = ("enc_fwd", "enc_bwd", "joint_fwd", "joint_bwd", "step")


def native_bf16() -> bool:
    """Whether the CPU has bf16 arithmetic (AVX512-BF16 or AMX); elsewhere autocast emulates it."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((ln for ln in f if ln.startswith("flags")), "")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_variants() -> list[str]:
    names = [n for n in VARIANTS if n not in OPT_IN]
    if native_bf16():
        names.insert(names.index("v2_core"), "bf16_autocast")
        names[names.index("preset_ddp2x1") + 1:names.index("preset_ddp2x1") + 1] = ["preset_bf16", "preset_ddp2x1_bf16"]
    return names


def fuse_lstm_predictor(pred: torch.nn.Module) -> None:
    """Run ``pred`` (an :class:`LstmPredictor`) through ``torch.lstm`` from now on (training forward only)."""

    def forward(tokens: torch.Tensor, state=None) -> torch.Tensor:
        if state is not None:
            raise NotImplementedError("fused bench forward: zero initial state only")
        x = pred.dropout(pred.embed(tokens))
        for layer in pred.layers:
            h0 = x.new_zeros(1, x.shape[0], layer.hidden_dim)
            weights = [layer.x2g.effective_weight(), layer.h2g.effective_weight(), layer.x2g.bias,
                       torch.zeros_like(layer.x2g.bias)]
            x = torch.lstm(x, (h0, h0), weights, True, 1, 0.0, pred.training, False, True)[0]
        return pred.dropout(x)

    pred.forward = forward


def _apply(cfg, overrides: dict[str, Any]) -> None:
    for key, val in overrides.items():
        section, field = key.split(".")
        sec = getattr(cfg, section)
        if not hasattr(sec, field):
            raise KeyError(f"{key}: no such config field")
        setattr(sec, field, val)


def draw_batches(cfg, n: int) -> tuple[list[dict], Tokenizer]:
    """The first ``n`` training batches of the sampler (seed ``train.seed``), SpecAugment as in training."""
    prepare_training_data(cfg.data.corpus_dir, cfg.data.train_splits, cfg.data.vocab_size)
    layout = CorpusLayout(cfg.data.corpus_dir)
    tok = Tokenizer(layout.bpe_model(cfg.data.vocab_size))
    norm = FeatureNormalizer.from_file(layout.global_stats)
    d = cfg.data
    spec = SpecAugmentConfig(d.freq_masks, d.freq_mask_width, d.time_masks, d.time_mask_fraction) if d.spec_augment else None
    ds = AsrDataset(tok, norm, d.on_the_fly_features, spec, seed=cfg.train.seed)
    cuts = load_split_cuts(cfg, d.train_splits, d.max_cut_duration)
    sampler = make_sampler(cuts, d.max_duration, shuffle=True, num_buckets=d.num_buckets, seed=cfg.train.seed)
    out: list[dict] = []
    while len(out) < n:  # a small corpus may hold fewer batches than asked: go round again
        before = len(out)
        for b in make_loader(ds, sampler, 0):
            out.append(b)
            if len(out) == n:
                break
        if len(out) == before:
            raise RuntimeError(f"no training batches in {cfg.data.corpus_dir}")
    return out, tok


class Runner:
    """One variant: its model, optimizer, batches and accumulated timings."""

    def __init__(self, name: str, cfg, batches: list[dict], tok: Tokenizer, compile_encoder: bool, bf16: bool,
                 fused_lstm: bool = False):
        self.name, self.cfg, self.batches, self.bf16 = name, cfg, batches, bf16
        cfg.model.vocab_size = tok.vocab_size
        cfg.model.blank_id = tok.blank_id
        torch.manual_seed(0)
        self.model = Transducer.from_config(cfg.model)
        self.params = self.model.num_params()
        self.model.train()
        if fused_lstm:
            fuse_lstm_predictor(self.model.predictor)
        if compile_encoder:
            self.model.encoder = torch.compile(self.model.encoder, dynamic=True)
        self.loss = TransducerLoss(self.model)
        self.loss.step = 10 ** 9  # past any warm-up of the pruned loss's scales: the steady state
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.parts = dict.fromkeys(PARTS, 0.0)
        self.audio_s = 0.0
        self.untimed_s: list[float] = []
        self.timed: list[dict] = []
        self.T_enc = 0

    def _one(self, b: dict) -> tuple[float, ...]:
        """One training step on batch ``b``; the five part durations (s)."""
        m, cfg = self.model, self.cfg
        blank = cfg.model.blank_id
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            enc, enc_lens = m.encode(b["feats"], b["feat_lens"], cfg.train.mode)
        enc = enc.float()
        ctc = None
        if m.ctc_head is not None and cfg.model.ctc_weight > 0:
            lp = m.ctc_head(enc).log_softmax(-1).transpose(0, 1)
            ctc = F.ctc_loss(lp, b["tokens"], enc_lens, b["token_lens"], blank=blank, reduction="sum",
                             zero_infinity=True) / b["feats"].shape[0]
        t1 = time.perf_counter()
        enc_cut = enc.detach().requires_grad_(True)
        pred = m.predict(add_blank_prefix(b["tokens"], b["token_lens"], blank))
        j = m.joiner
        simple = m.simple_joint(enc_cut, pred) if m.simple_joint is not None else None
        loss, _, _ = self.loss.rnnt_from_projections(j.project_enc(enc_cut), j.project_pred(pred), b["tokens"],
                                                     enc_lens, b["token_lens"], simple)
        t2 = time.perf_counter()
        loss.backward()
        t3 = time.perf_counter()
        if ctc is not None:
            torch.autograd.backward([enc, ctc * cfg.model.ctc_weight], [enc_cut.grad, None])
        else:
            enc.backward(enc_cut.grad)
        t4 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        t5 = time.perf_counter()
        self.T_enc = int(enc.shape[1])
        return t1 - t0, t4 - t3, t2 - t1, t3 - t2, t5 - t4

    def step(self, i: int, timed: bool, repeats: int) -> None:
        b = self.batches[i]
        runs = [self._one(b) for _ in range(repeats)]
        if not timed:
            self.untimed_s += [round(sum(r), 2) for r in runs]
            return
        best = min(runs, key=sum)
        for k, dt in zip(PARTS, best):
            self.parts[k] += dt
        lens = b["feat_lens"]
        audio = float(lens.sum()) * 0.01
        self.audio_s += audio
        self.timed.append({"B": int(lens.shape[0]), "T_enc": self.T_enc, "U": int(b["tokens"].shape[1]),
                           "audio_s": round(audio, 1), "s": round(sum(best), 3),
                           "padding": round(1.0 - float(lens.sum()) / (lens.shape[0] * b["feats"].shape[1]), 3)})

    def result(self) -> dict[str, Any]:
        n = len(self.timed)
        total = sum(self.parts.values())
        audio = sum(x["audio_s"] for x in self.timed)
        pad = sum(x["padding"] * x["audio_s"] for x in self.timed) / max(1e-9, audio)
        return {"s_per_step": total / n, "audio_s_per_wall_s": self.audio_s / total,
                "share": {k: v / total for k, v in self.parts.items()},
                "s_per_step_parts": {k: v / n for k, v in self.parts.items()},
                "padding": round(pad, 3), "params": self.params, "warmup_s": self.untimed_s, "batches": self.timed}


def _rank_worker(rank: int, world: int, cfg, n_draw: int, init_file: str, commands, results) -> None:
    """One DDP rank (gloo, 1 thread) of a ``ranks`` variant: the trainer's step (DDP over
    :class:`TransducerLoss`, clipping, AdamW) on this rank's share of the batches, one per command."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    batches, tok = draw_batches(cfg, n_draw * world)
    mine = batches[rank::world]
    cfg.model.vocab_size, cfg.model.blank_id = tok.vocab_size, tok.blank_id
    torch.manual_seed(0)
    model = Transducer.from_config(cfg.model).train()
    loss = TransducerLoss(model, autocast=torch.bfloat16 if cfg.train.autocast == "bf16" else None)
    loss.step = 10 ** 9  # past any warm-up of the pruned loss's scales, as in Runner
    ddp = torch.nn.parallel.DistributedDataParallel(loss)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    results.put(("ready", rank, model.num_params()))
    while (i := commands.get()) is not None:
        b = mine[i]
        out = ddp(b["feats"], b["feat_lens"], b["tokens"], b["token_lens"], mode=cfg.train.mode)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        results.put(("done", rank, float(b["feat_lens"].sum()) * 0.01))
    dist.destroy_process_group()


class RankPool:
    """A variant trained by ``ranks`` DDP processes of one thread each (``torchrun``'s layout on a small
    CPU). The workers wait while the in-process variants run, so the variants still take turns; a step's
    time is the wall clock from the command to the last rank's reply, its audio that of every rank."""

    TIMEOUT_S = 900

    def __init__(self, name: str, cfg, n_draw: int, ranks: int):
        self.name = name
        prepare_training_data(cfg.data.corpus_dir, cfg.data.train_splits, cfg.data.vocab_size)
        ctx = mp.get_context("spawn")
        self._dir = tempfile.TemporaryDirectory(prefix="train_profile_ddp_")
        self.commands = [ctx.Queue() for _ in range(ranks)]
        self.results = ctx.Queue()
        init = str(Path(self._dir.name) / "init")
        self.procs = [ctx.Process(target=_rank_worker, args=(r, ranks, cfg, n_draw, init, self.commands[r],
                                                             self.results), daemon=True) for r in range(ranks)]
        for p in self.procs:
            p.start()
        self.params = [self._reply("ready")[2] for _ in range(ranks)][0]
        self.s_total = self.audio_s = 0.0
        self.untimed_s: list[float] = []
        self.timed: list[dict] = []

    def _reply(self, kind: str) -> tuple:
        try:
            msg = self.results.get(timeout=self.TIMEOUT_S)
        except queue.Empty:
            raise RuntimeError(f"[{self.name}] a DDP rank did not answer in {self.TIMEOUT_S} s "
                               f"(alive: {[p.is_alive() for p in self.procs]})") from None
        if msg[0] != kind:
            raise RuntimeError(f"[{self.name}] unexpected message from a rank: {msg!r}")
        return msg

    def step(self, i: int, timed: bool, repeats: int) -> None:
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for q in self.commands:
                q.put(i)
            audio = sum(self._reply("done")[2] for _ in self.commands)
            runs.append(time.perf_counter() - t0)
        if not timed:
            self.untimed_s += [round(r, 2) for r in runs]
            return
        self.s_total += min(runs)
        self.audio_s += audio
        self.timed.append({"audio_s": round(audio, 1), "s": round(min(runs), 3)})

    def result(self) -> dict[str, Any]:
        return {"s_per_step": self.s_total / len(self.timed), "audio_s_per_wall_s": self.audio_s / self.s_total,
                "ranks": len(self.procs), "threads_per_rank": 1, "params": self.params,
                "warmup_s": self.untimed_s, "batches": self.timed}

    def close(self) -> None:
        for q in self.commands:
            q.put(None)
        for p in self.procs:
            p.join(timeout=60)
        self._dir.cleanup()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpus", default=None, help="corpus dir (default: the preset's data.corpus_dir)")
    ap.add_argument("--preset", default="small", help="base config: a preset name (omnisparse/conf/)  or a path")
    ap.add_argument("--batches", type=int, default=8, help="timed batches per variant")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each batch in a row; the fastest counts")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (allocators, torch.compile)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(default_variants()),
                    help=f"comma-separated ('today' is always run); known: {', '.join(VARIANTS)}")
    ap.add_argument("--out", default="bench/results/train_profile.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown} (known: {', '.join(VARIANTS)})")
    names = ["today"] + [n for n in dict.fromkeys(names) if n != "today"]
    base = load_config(args.preset, [f"--data.corpus_dir={args.corpus}"] if args.corpus else [])
    n_draw = args.warmup + args.batches
    cache: dict[tuple, tuple[list[dict], Tokenizer]] = {}
    runners: list[Runner | RankPool] = []
    for name in names:
        spec = VARIANTS[name]
        cfg = copy.deepcopy(base)
        _apply(cfg, spec["overrides"])
        d = cfg.data
        if spec.get("ranks", 1) > 1:
            runners.append(RankPool(name, cfg, n_draw, spec["ranks"]))
            print(f"[{name}] the preset on {spec['ranks']} DDP ranks x 1 thread, {runners[-1].params / 1e6:.2f}M params",
                  flush=True)
            continue
        key = (d.vocab_size, d.num_buckets, d.max_duration, d.max_cut_duration, d.spec_augment)
        if key not in cache:
            cache[key] = draw_batches(cfg, n_draw)
        runners.append(Runner(name, cfg, *cache[key], compile_encoder=spec.get("compile", False),
                              bf16=spec.get("bf16", False) or cfg.train.autocast == "bf16",
                              fused_lstm=spec.get("fused_lstm", False)))
        m = cfg.model
        print(f"[{name}] vocab {d.vocab_size}, {d.max_duration:g} s x {d.num_buckets} buckets, pred {m.pred_type}, "
              f"loss {m.loss}" + "".join(f" + {k}" for k in ("compile", "bf16", "fused_lstm") if spec.get(k))
              + f", {runners[-1].params / 1e6:.2f}M params", flush=True)
    for i in range(n_draw):
        for r in (runners if i % 2 == 0 else runners[::-1]):
            r.step(i, timed=i >= args.warmup, repeats=args.repeats)
        print(f"round {i + 1}/{n_draw}", flush=True)
    for r in runners:
        if isinstance(r, RankPool):
            r.close()
    results = {}
    for r in runners:
        spec = VARIANTS[r.name]
        results[r.name] = {"overrides": spec["overrides"], "compile": spec.get("compile", False),
                           "bf16": spec.get("bf16", False) or spec["overrides"].get("train.autocast") == "bf16",
                           "fused_lstm": spec.get("fused_lstm", False),
                           **r.result()}
    ref = results["today"]["audio_s_per_wall_s"]
    for name, r in results.items():
        r["speedup_vs_today"] = r["audio_s_per_wall_s"] / ref
        print(f"{name:>15}: {r['s_per_step']:.2f} s/step, {r['audio_s_per_wall_s']:6.1f} audio-s/s, "
              f"x{r['speedup_vs_today']:.2f}, pad {r.get('padding', float('nan')):.0%}, {r['params'] / 1e6:.2f}M, "
              + ", ".join(f"{k} {v:.0%}" for k, v in r.get("share", {}).items()), flush=True)
    write_result(args.out, {"preset": args.preset, "corpus": base.data.corpus_dir, "threads": args.threads,
                            "batches": args.batches, "repeats": args.repeats, "warmup": args.warmup,
                            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "native_bf16": native_bf16(),
                            "speedup_vs_today": {n: round(r["speedup_vs_today"], 3) for n, r in results.items()},
                            "variants": results}, command=" ".join(sys.argv))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
