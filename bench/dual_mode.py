"""Dual-mode ASR via self-pruning (Liu et al., SLT 2022) against single-mode models of the same budget.

    .venv/bin/python bench/dual_mode.py [--preset-suffix small] [--exp exp/small/dual] [--dense exp/small/dense]
        [--systems dual-mode dual-mode+ssl dense-full-only dense-stream-only individual-pruned-stream]
        [--steps N] [--sparsity 0.7] [--pretrain-steps N] [--test-subset 0] [--format int8-sparse]
        [--labelled-hours 1 5 [--dense-steps N]] [--out bench/results/dual_mode.json] [--section.key=value ...]

Systems (one run directory each under ``--exp``):

  dual-mode                 ``train --dual-mode`` (``dual_<suffix>``): one weight set, a dense full-context
                            path + a uniform-s* streaming path per step. Rows (full, 0) and (stream, s*).
  dual-mode+ssl             wav2vec 2.0 supernet pre-training (``pretrain_<suffix>``, ``EXP/pretrain``), then
                            the SAME dense recipe as ``--dense`` from that encoder (``EXP/dense-ssl``), then
                            dual mode exactly as ``dual-mode`` from it (``EXP/dual-mode-ssl``). Same two rows.
  dense-full-only           dense training in ``full`` attention mode; row (full, 0).
  dense-stream-only         dense training in ``stream`` mode; row (stream, 0).
  individual-pruned-stream  gradual magnitude pruning to uniform s* (``prune_<suffix>``), stream mode;
                            row (stream, s*): exactly the size of the dual-mode streaming model.

Fairness (the rule of this comparison: every model gets the same number of optimizer steps as the
dual-mode model). Every system starts from the same dense streaming checkpoint ``--dense`` (the model
of bench/dense_small.py) and trains N more optimizer steps (N = ``dual_<suffix>``'s ``train.max_steps``,
600 on ``small``, or ``--steps``) with the dual preset's optimizer (lr, warm-up, cosine decay to N,
weight decay, clipping), data, SpecAugment and dropout. This is the cheap variant of "everything from
scratch for N steps" and keeps every baseline meaningful: ``dense-full-only`` is the dense model turned
into a full-context model with N steps of full-mode training, ``dense-stream-only`` the same N steps in
stream mode (a control: what N more steps buy without sparsity or a second mode), and the pruned
baseline ramps its sparsity with the same cubic schedule as the dual-mode streaming path
(``sparsity.prune_steps`` = ``dual.ramp_steps``) then fine-tunes with fixed masks. A dual-mode step runs
two forward/backward passes (full + stream), the single-mode ones one: equal optimizer steps, twice
the passes for dual mode (``fwd_bwd_passes`` is in every row).

Labelled budgets (``--labelled-hours 1 5``: the low-resource setting, where pre-training has far more
untranscribed than transcribed audio). One experiment per budget H under ``EXP/labelled-<H>h``: every
supervised stage (its own dense start ``EXP/labelled-<H>h/dense``, ``--dense-steps`` long, the SSL dense
start and the five systems) trains on the same speaker-balanced subset of H hours of the train split
(``data.train_hours``, seeded), while the one pre-training run ``EXP/pretrain``, shared by every budget,
sees all of the train audio without its transcripts. A subset's dense start stays clean as many steps
as the whole split's recipe does before audio augmentation and SpecAugment begin (their start epochs
times train hours / H). Every row gives ``labelled_hours`` (the subset's measured hours); ``targets``
and ``shortfalls`` are per budget, ``budgets`` lists each one's directories, and at the smallest budget
SSL must improve both dual-mode models by >= 5 % relative, not merely at all. Without the flag the
whole train split is the labelled data (rows labelled ``all``) and ``--dense`` the start.

SSL. Giving dual-mode+ssl the pre-trained encoder *instead of* the dense checkpoint would compare
1,500 unsupervised + N supervised steps with 9,000 + N supervised ones, which says nothing about
pre-training. So pre-training is placed where it can only change the starting point: the dense stage
is re-run with the same config (the ``--dense`` run's own ``config.json``: same steps, schedule and
data) from the pre-trained encoder (``train.init_encoder_from``; predictor, joiner and CTC head fresh),
and dual mode follows with the same N steps. The two dual-mode pipelines differ only in the encoder
initialisation of the dense stage. Its rows also give ``pretrain_wall_s``, ``dense_init_wall_s`` and
``pretrain_last_dev`` (the pre-training's last dev masked-frame accuracy and code perplexity); every
row gives ``dense_init_last_dev_wer`` (its dense start's last dev-subset WER from ``metrics.csv``).
``pretrain_curves`` holds every dev validation of the pre-training per path (masked-frame accuracy,
accuracy on the non-trivial frames, code perplexity, trivial share), drawn in ``<out>_pretrain.png``.
Pre-training follows ``pretrain_<suffix>`` with ``pretrain.sparsity`` = s*.

Every run ignores its preset's wall-clock cap (``train.max_wall_s=0``): steps, not time, are the
budget. Stages are resumable: a run whose newest checkpoint has reached its step count is skipped, an
unfinished one resumes from its last checkpoint, and WERs are cached in ``EXP/eval.json`` per (row,
sha256 of the checkpoint's weights, test subset). A missing ``--dense`` run is trained first with
``<suffix>``'s preset (the tiny smoke path; on ``small`` it is bench/dense_small.py's run).

Evaluation: greedy WER on dev, test-clean and test-other (``--test-subset N``: first N cuts of each)
in the row's attention mode; sparse rows decode with magnitude masks at uniform s* computed from the
final weights (the individually pruned model's pruned weights are zeros, so its masks are exactly its
zeros). ``size_bytes`` is the exact size of the exported artefact in ``--format`` (default
``int8-sparse``, every row in the same format); ``size_bytes_by_format`` gives fp32-dense and
fp32-sparse too. ``train_wall_s`` is the run's own ``cost.json`` wall time (the shared dense start's in
``dense_init_wall_s``). The JSON's ``targets`` section evaluates three targets per split (dual-mode
streaming no worse than individually pruned; dual-mode full no worse than dense-full-only; SSL
improves both modes; True/False, None when a row is missing) and ``shortfalls`` says where they are missed. A PNG of WER
per system and mode, one panel per split, lies beside the JSON.

Expected CPU time on ``small`` (2 idle cores, 60 s batches, ~0.42 s per dense step, ~0.84 s per
dual step of two passes; estimates from step counts, not measured end to end): dual-mode 600 dual
steps ~9 min; dense-full-only, dense-stream-only and individual-pruned-stream 600 steps each ~4-5 min;
dual-mode+ssl: pre-training 1,500 steps (2.3 s/step measured on one thread of a loaded machine, so
~30-60 min), dense-ssl 9,000 steps ~63 min, dual 600 steps ~9 min; evaluation of the 7 rows x 2,500
utterances a few minutes (batched greedy; in-run validation of 200 dev utterances takes ~1-2 s).
About 25 min without dual-mode+ssl, 2.5-3 h with it.

Smoke test (seconds to minutes)::

    .venv/bin/python bench/dual_mode.py --preset-suffix tiny --exp /tmp/dual/exp --dense /tmp/dual/exp/dense \\
        --data.corpus_dir=data/tiny --pretrain-steps 20 --test-subset 20 --out /tmp/dual/dual_mode.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Callable, Optional

from omnisparse.config import Config, apply_overrides, config_from_dict, load_config
from omnisparse.export.format import FORMATS
from omnisparse.io import checkpoint as ck
from omnisparse.io.atomic import atomic_write_text
from omnisparse.train.sparse_base import SparseTrainerBase
from omnisparse.utils.plotting import saved_figure
from omnisparse.utils.provenance import write_result

log = logging.getLogger("bench.dual_mode")

SYSTEMS = ("dual-mode", "dual-mode+ssl", "dense-full-only", "dense-stream-only", "individual-pruned-stream")
# train settings every run copies from the dual-mode config: optimizer, schedule, validation cadence
TRAIN_KEYS = ("lr", "warmup_steps", "decay", "min_lr_ratio", "weight_decay", "betas", "grad_clip", "seed",
              "valid_every", "ckpt_every")
SPARSITY_KEYS = ("granularity", "block", "grid", "prune_pred_joiner")


class DenseFromInit(SparseTrainerBase):
    """Dense training in ``train.mode`` that starts from the weights of ``sparsity.init_from`` (fresh
    optimizer, like the dual-mode and pruning runs started from the same checkpoint). No mask is ever
    set during training; validation decodes the dense model in ``train.mode``."""

    kind = "dense"


# ---------------------------------------------------------------------------- runs and configs
class Experiment:
    """The runs of one labelled budget: ``labelled_hours`` > 0 puts every supervised stage (the dense
    start included, trained here under ``EXP/labelled-<H>h/dense``) on the speaker-balanced
    ``data.train_hours`` subset, while pre-training (``EXP/pretrain``, shared by every budget) sees all
    of the train audio; 0 is the whole train split from ``--dense``."""

    def __init__(self, args: argparse.Namespace, extra: list[str], labelled_hours: float = 0.0):
        sfx = args.preset_suffix
        self.base, self.dual_preset = sfx, f"dual_{sfx}"
        self.prune_preset, self.pretrain_preset = f"prune_{sfx}", f"pretrain_{sfx}"
        top = Path(args.exp or f"exp/{sfx}/dual")
        self.hours = labelled_hours
        self.label = f"{labelled_hours:g}h" if labelled_hours else "all"
        self.root = top / f"labelled-{self.label}" if labelled_hours else top
        self.dense = self.root / "dense" if labelled_hours else Path(args.dense or f"exp/{sfx}/dense")
        self.dense_steps = args.dense_steps
        self.extra = extra
        self.label_args = [f"--data.train_hours={labelled_hours:g}"] if labelled_hours else []
        self.pretrain_steps = args.pretrain_steps
        d = load_config(self.dual_preset, extra)
        self.steps = args.steps or d.train.max_steps
        # the streaming ramp keeps its share of the run when --steps changes it (300 of 600 on small)
        frac = d.dual.ramp_steps / max(1, d.train.max_steps)
        self.ramp = max(1, min(self.steps, round(frac * self.steps)))
        self.s_star = args.sparsity if args.sparsity is not None else d.dual.sparsity
        self.dual_cfg0 = d
        self.dirs = {"dual-mode": self.root / "dual-mode", "dual-mode+ssl": self.root / "dual-mode-ssl",
                     "pretrain": top / "pretrain", "dense-ssl": self.root / "dense-ssl",
                     "dense-full-only": self.root / "dense-full-only",
                     "dense-stream-only": self.root / "dense-stream-only",
                     "individual-pruned-stream": self.root / f"prune-{self.s_star:g}"}

    def common(self, out: Path, init: Path) -> list[str]:
        d = self.dual_cfg0
        optim = [f"--train.{k}={json.dumps(getattr(d.train, k))}" for k in TRAIN_KEYS]
        sparsity = [f"--sparsity.{k}={json.dumps(getattr(d.sparsity, k))}" for k in SPARSITY_KEYS]
        return [f"--train.out_dir={out}", f"--sparsity.init_from={init}", "--sparsity.dense_steps=0",
                f"--train.max_steps={self.steps}", "--train.max_wall_s=0", *optim, *sparsity, *self.label_args,
                *self.extra]

    def train_hours(self) -> float:
        """Hours of the whole train split (the labelled audio of the full budget)."""
        from omnisparse.data.splits import load_split_cuts

        if not hasattr(self, "_train_hours"):
            cfg = load_config(self.base, self.extra)
            self._train_hours = sum(c.duration for c in load_split_cuts(cfg, cfg.data.train_splits)) / 3600
        return self._train_hours

    def dense_init_config(self) -> Config:
        """The dense start: ``<suffix>``'s recipe; on a labelled subset with as many clean steps before
        audio augmentation and SpecAugment as on the whole split (their start epochs scaled by
        train hours / labelled hours: a 1 h epoch is a twentieth of a 20 h one)."""
        args = [f"--train.out_dir={self.dense}", "--train.max_wall_s=0", *self.label_args]
        if self.dense_steps:
            args.append(f"--train.max_steps={self.dense_steps}")
        cfg = load_config(self.base, [*args, *self.extra])
        if not self.hours:
            return cfg
        scale = max(1.0, self.train_hours() / self.hours)
        return load_config(self.base, [*args, *self.extra,
                                       f"--augment.start_epoch={math.ceil(cfg.augment.start_epoch * scale)}",
                                       f"--data.spec_augment_start_epoch={math.ceil(cfg.data.spec_augment_start_epoch * scale)}"])

    def dual_config(self, out: Path, init: Path) -> Config:
        return load_config(self.dual_preset, [*self.common(out, init), f"--dual.sparsity={self.s_star}",
                                              f"--dual.ramp_steps={self.ramp}"])

    def dense_config(self, out: Path, mode: str) -> Config:
        return load_config(self.dual_preset, [*self.common(out, self.dense), f"--train.mode={mode}"])

    def prune_config(self, out: Path) -> Config:
        every = load_config(self.prune_preset, self.extra).sparsity.prune_every
        return load_config(self.prune_preset, [*self.common(out, self.dense), f"--sparsity.target={self.s_star}",
                                               f"--sparsity.prune_steps={self.ramp}",
                                               f"--sparsity.prune_every={max(1, min(every, self.ramp))}",
                                               "--train.mode=stream"])

    def pretrain_config(self) -> Config:
        steps = [f"--train.max_steps={self.pretrain_steps}"] if self.pretrain_steps else []
        return load_config(self.pretrain_preset, [f"--train.out_dir={self.dirs['pretrain']}", "--train.max_wall_s=0",
                                                  f"--pretrain.sparsity={self.s_star}", *steps, *self.extra])

    def dense_ssl_config(self) -> Config:
        """The --dense run's own config, from the pre-trained encoder, into EXP/dense-ssl."""
        cfg = config_from_dict(json.loads((self.dense / "config.json").read_text()))
        return apply_overrides(cfg, [f"--train.out_dir={self.dirs['dense-ssl']}",
                                     f"--train.init_encoder_from={self.dirs['pretrain']}", "--train.max_wall_s=0",
                                     *self.extra])


def run_state(run_dir: Path) -> Optional[dict]:
    found = ck.latest_checkpoint(run_dir) if run_dir.exists() else None
    return found[1] if found else None


def stage(name: str, run_dir: Path, cfg: Config, fn: Callable[[Config], Any]) -> None:
    """Train ``cfg`` with ``fn`` unless ``run_dir`` already holds its last step; refuse a run directory
    that was started with another step count (another budget, another learning-rate schedule)."""
    state = run_state(run_dir)
    if state is not None:
        saved = state.get("config", {}).get("train", {}).get("max_steps")
        if saved is not None and saved != cfg.train.max_steps:
            raise SystemExit(f"{run_dir} was trained for train.max_steps={saved}, this run asks for "
                             f"{cfg.train.max_steps}: use another --exp (or the same --steps)")
        if state["step"] >= cfg.train.max_steps:
            print(f"== {name}: done ({run_dir}, step {state['step']}), skipped", flush=True)
            return
    print(f"== {name} -> {run_dir} ({cfg.train.max_steps} steps"
          f"{', resuming at ' + str(state['step']) if state else ''})", flush=True)
    fn(cfg)


def train_dense_init(exp: Experiment) -> None:
    from omnisparse.train.registry import train

    cfg = exp.dense_init_config()
    state = run_state(exp.dense)
    if state is not None and state["step"] >= cfg.train.max_steps and not exp.hours:
        return  # a given --dense run is used as it is, whatever its step count
    stage(f"dense start ({exp.base}, labelled: {exp.label})", exp.dense, cfg, train)


def train_system(exp: Experiment, system: str) -> None:
    from omnisparse.train.prune import prune
    from omnisparse.train.pretrain import pretrain
    from omnisparse.train.registry import train
    from omnisparse.train.trainer import run_trainer

    dual = lambda c: train(c, dual_mode=True)  # noqa: E731
    dense_ft = lambda c: run_trainer(DenseFromInit(c))  # noqa: E731
    out = exp.dirs[system]
    if system == "dual-mode":
        stage(system, out, exp.dual_config(out, exp.dense), dual)
    elif system == "dense-full-only":
        stage(system, out, exp.dense_config(out, "full"), dense_ft)
    elif system == "dense-stream-only":
        stage(system, out, exp.dense_config(out, "stream"), dense_ft)
    elif system == "individual-pruned-stream":
        stage(system, out, exp.prune_config(out), prune)
    elif system == "dual-mode+ssl":
        stage("dual-mode+ssl: pretrain", exp.dirs["pretrain"], exp.pretrain_config(), pretrain)
        stage("dual-mode+ssl: dense from the pre-trained encoder", exp.dirs["dense-ssl"], exp.dense_ssl_config(), train)
        stage("dual-mode+ssl: dual mode", out, exp.dual_config(out, exp.dirs["dense-ssl"]), dual)
    else:
        raise ValueError(system)


# ---------------------------------------------------------------------------- evaluation
ROWS = (("dual-mode", "full", False), ("dual-mode", "stream", True), ("dual-mode+ssl", "full", False),
        ("dual-mode+ssl", "stream", True), ("dense-full-only", "full", False),
        ("dense-stream-only", "stream", False), ("individual-pruned-stream", "stream", True))


def cost_of(run_dir: Path) -> dict:
    p = run_dir / "cost.json"
    return json.loads(p.read_text()) if p.exists() else {}


def last_logged(run_dir: Path, keys: tuple[str, ...]) -> Optional[dict]:
    """The last validation values ``keys`` of a run's ``metrics.csv`` (None when never logged)."""
    p = run_dir / "metrics.csv"
    if not p.exists():
        return None
    with open(p) as f:
        rows = [r for r in csv.DictReader(f) if all(r.get(k) for k in keys)]
    return {"step": int(rows[-1]["step"]), **{k: float(rows[-1][k]) for k in keys}} if rows else None


PRETRAIN_DEV_KEYS = ("dev_dense_accuracy", "dev_dense_code_ppl", "dev_sparse_accuracy", "dev_sparse_code_ppl")
# pre-training health per path over training: (metrics.csv suffix, what it is)
HEALTH = (("accuracy", "masked-frame accuracy"), ("hard_accuracy", "accuracy where the distractors' codes differ"),
          ("code_ppl", "code perplexity (argmax codes used)"), ("trivial", "trivial share (all distractors same code)"))


def pretrain_curves(run_dir: Path) -> dict[str, list[dict]]:
    """``{"dense": [{step, accuracy, hard_accuracy, code_ppl, trivial}, ...], "sparse": [...]}``: every
    validation of a pre-training run's ``metrics.csv`` per path (empty lists when never validated)."""
    p = run_dir / "metrics.csv"
    out: dict[str, list[dict]] = {"dense": [], "sparse": []}
    if not p.exists():
        return out
    with open(p) as f:
        for r in csv.DictReader(f):
            for path, curve in out.items():
                vals = {k: r.get(f"dev_{path}_{k}") for k, _ in HEALTH}
                if all(vals.values()):
                    curve.append({"step": int(r["step"]), **{k: float(v) for k, v in vals.items()}})
    return out


def plot_pretrain(curves: dict[str, list[dict]], path: Path, num_codes: int) -> None:
    """One panel per health metric, dense and sparse path over pre-training steps (dev, eval mode)."""
    with saved_figure(path, 1, len(HEALTH), figsize=(4 * len(HEALTH), 3.6), squeeze=False) as (fig, axes):
        for ax, (key, what) in zip(axes[0], HEALTH):
            for name, style in (("dense", "-o"), ("sparse", "--s")):
                c = curves[name]
                ax.plot([x["step"] for x in c], [x[key] for x in c], style, ms=3, label=name)
            if key == "code_ppl":
                ax.axhline(num_codes, color="gray", lw=0.8, ls=":", label=f"{num_codes} codes")
            ax.set_title(what, fontsize=9)
            ax.set_xlabel("pre-training step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle("wav2vec 2.0 supernet pre-training health, dev (eval mode, fixed masks)", fontsize=10)


def evaluate_rows(exp: Experiment, test_subset: int, fmt: str) -> list[dict]:
    """One row per (system, mode) whose run has finished its N steps; WER from EXP/eval.json when cached."""
    from omnisparse.data.splits import load_split_cuts
    from omnisparse.decoding.evaluate import evaluate_cuts
    from omnisparse.export.loading import load_model
    from omnisparse.report.collect import space_and_bank

    cache_path = exp.root / "eval.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    dense_cost = cost_of(exp.dense)
    loaded: dict[Path, tuple] = {}
    cuts: dict[str, Any] = {}
    rows = []
    for system, mode, sparse in ROWS:
        run = exp.dirs[system]
        state = run_state(run)
        if state is None or state["step"] < exp.steps:
            continue
        if run not in loaded:
            lm = load_model(run)
            loaded = {run: (lm, *space_and_bank(lm))}  # one model in memory at a time
        lm, space, bank = loaded[run]
        s = exp.s_star if sparse else 0.0
        config = space.uniform(s)
        splits = [lm.config.data.dev_split, *lm.config.data.test_splits]
        key = f"{system}:{mode}:{s:g}"
        weights = state.get("sha256", {}).get("model.safetensors")  # the newest checkpoint's, as load_model's
        hit = cache.get(key)
        if (hit and hit.get("weights") == weights and hit["test_subset"] == test_subset
                and set(splits) <= set(hit["wer"])):
            wer, utts = hit["wer"], hit["utterances"]
        else:
            if sparse:
                bank.apply(config)
            else:
                bank.clear()
            wer, utts = {}, {}
            for split in splits:
                if split not in cuts:
                    c = load_split_cuts(lm.config, [split])
                    cuts[split] = c.subset(first=min(test_subset, len(c))) if test_subset > 0 else c
                r = evaluate_cuts(lm.model, cuts[split], lm.tokenizer, lm.normalizer, mode=mode,
                                  decode=lm.config.decode, progress=True)
                wer[split], utts[split] = r["wer"], r["utterances"]
                print(f"   {key} {split}: WER {r['wer']:.4f} ({r['utterances']} utterances, {r['decode_s']:.0f} s)",
                      flush=True)
            bank.clear()
            cache[key] = {"checkpoint": str(lm.path), "weights": weights, "test_subset": test_subset, "wer": wer,
                          "utterances": utts}
            atomic_write_text(cache_path, json.dumps(cache, indent=2))
        cost = cost_of(run)
        row = {"system": system, "mode": mode, "sparsity": s,
               "labelled_hours": cost.get("labelled_hours") or round(exp.train_hours(), 4),
               "labelled": exp.label, "size_bytes": space.size_bytes(config, fmt),
               "size_format": fmt, "size_bytes_by_format": {f: space.size_bytes(config, f) for f in FORMATS},
               "nonzero_params": space.nonzero_params(config), "wer": wer, "utterances": utts,
               "train_wall_s": cost.get("wall_s"), "optimizer_steps": cost.get("optimizer_steps"),
               "fwd_bwd_passes": cost.get("fwd_bwd_passes"), "run_dir": str(run), "checkpoint": str(lm.path)}
        if system == "dual-mode+ssl":
            pre, dssl = cost_of(exp.dirs["pretrain"]), cost_of(exp.dirs["dense-ssl"])
            row.update(init=str(exp.dirs["dense-ssl"]), pretrain_wall_s=pre.get("wall_s"),
                       pretrain_steps=pre.get("optimizer_steps"), dense_init_wall_s=dssl.get("wall_s"),
                       dense_init_steps=dssl.get("optimizer_steps"),
                       pretrain_last_dev=last_logged(exp.dirs["pretrain"], PRETRAIN_DEV_KEYS),
                       dense_init_last_dev_wer=last_logged(exp.dirs["dense-ssl"], ("dev_wer",)))
        else:
            row.update(init=str(exp.dense), dense_init_wall_s=dense_cost.get("wall_s"),
                       dense_init_steps=dense_cost.get("optimizer_steps"),
                       dense_init_last_dev_wer=last_logged(exp.dense, ("dev_wer",)))
        parts = [row.get("pretrain_wall_s"), row["dense_init_wall_s"], row["train_wall_s"]]
        row["total_wall_s"] = sum(p for p in parts if p is not None)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------- targets and plot
def compare(rows: list[dict], a: tuple[str, str], b: tuple[str, str], strict: bool, min_gain: float = 0.0) -> dict:
    """Per split: is WER of row ``a`` <= (``strict``: <) that of row ``b``, or with ``min_gain`` > 0
    at most ``(1 - min_gain)`` times it; ``met`` over all splits (None when a row is missing)."""
    find = {(r["system"], r["mode"]): r for r in rows}
    ra, rb = find.get(a), find.get(b)
    relation = f"<= (1 - {min_gain:g}) x" if min_gain else "<" if strict else "<="
    out: dict[str, Any] = {"a": f"{a[0]} ({a[1]})", "b": f"{b[0]} ({b[1]})", "relation": relation}
    if ra is None or rb is None:
        return {**out, "met": None, "missing": [f"{x[0]} ({x[1]})" for x, r in ((a, ra), (b, rb)) if r is None]}
    per = {}
    for split in ra["wer"]:
        if split in rb["wer"]:
            wa, wb = ra["wer"][split], rb["wer"][split]
            ok = wa <= (1 - min_gain) * wb if min_gain else wa < wb if strict else wa <= wb
            per[split] = {"a": wa, "b": wb, "delta": wa - wb, "rel_gain": 1 - wa / wb if wb else None, "ok": ok}
    out.update(per_split=per, met=all(p["ok"] for p in per.values()), size_bytes=[ra["size_bytes"], rb["size_bytes"]])
    return out


def targets(rows: list[dict], steps: int, ssl_min_gain: float = 0.0) -> tuple[dict, list[str]]:
    """The targets of one labelled budget's rows; SSL must win by ``ssl_min_gain`` (relative) where > 0."""
    t = {
        "stream_dual_no_worse_than_individual": compare(rows, ("dual-mode", "stream"),
                                                        ("individual-pruned-stream", "stream"), strict=False),
        "full_dual_no_worse_than_dense_full": compare(rows, ("dual-mode", "full"), ("dense-full-only", "full"),
                                                      strict=False),
    }
    sf = compare(rows, ("dual-mode+ssl", "full"), ("dual-mode", "full"), strict=True, min_gain=ssl_min_gain)
    ss = compare(rows, ("dual-mode+ssl", "stream"), ("dual-mode", "stream"), strict=True, min_gain=ssl_min_gain)
    both = None if sf["met"] is None or ss["met"] is None else bool(sf["met"] and ss["met"])
    t["ssl_improves_both"] = {"met": both, "full": sf, "stream": ss}
    st = t["stream_dual_no_worse_than_individual"]
    if st.get("size_bytes"):
        st["same_size"] = st["size_bytes"][0] == st["size_bytes"][1]
    steps_of = {f"{r['system']} ({r['mode']})": r["optimizer_steps"] for r in rows}
    init_steps = {f"{r['system']} ({r['mode']})": r["dense_init_steps"] for r in rows}
    t["equal_optimizer_steps"] = {"steps": steps, "per_row": steps_of, "dense_init_steps": init_steps,
                                  "met": (all(v == steps for v in steps_of.values())
                                          and len(set(init_steps.values())) == 1) if steps_of else None}
    short = []
    for name, c in [("dual-mode stream vs individually pruned stream (<=)", st),
                    ("dual-mode full vs dense full-only (<=)", t["full_dual_no_worse_than_dense_full"]),
                    (f"SSL, full mode ({sf['relation']})", sf), (f"SSL, stream mode ({ss['relation']})", ss)]:
        if c["met"] is None:
            short.append(f"{name}: not measured (missing {', '.join(c['missing'])})")
        elif not c["met"]:
            bad = [f"{s} {p['a']:.4f} vs {p['b']:.4f}" for s, p in c["per_split"].items() if not p["ok"]]
            short.append(f"{name}: missed on {'; '.join(bad)}")
    if st.get("same_size") is False:
        short.append(f"stream models differ in size: {st['size_bytes']}")
    if t["equal_optimizer_steps"]["met"] is False:
        short.append(f"optimizer steps differ: {steps_of}, dense start {init_steps}")
    return t, short


def plot(rows: list[dict], path: Path, title: str) -> None:
    """WER per system and mode: one panel per split, one row of panels per labelled budget."""
    budgets = list(dict.fromkeys(r["labelled"] for r in rows)) or ["all"]
    splits = list(rows[0]["wer"]) if rows else []
    ncols = max(1, len(splits))
    with saved_figure(path, len(budgets), ncols, figsize=(4.2 * ncols, 4.6 * len(budgets)), sharey=True,
                      squeeze=False) as (fig, axes):
        for axrow, budget in zip(axes, budgets):
            rs = [r for r in rows if r["labelled"] == budget]
            labels = [f"{r['system']}\n{r['mode']}" + (f", s={r['sparsity']:g}" if r["sparsity"] else "") for r in rs]
            colors = ["tab:blue" if r["mode"] == "full" else "tab:orange" for r in rs]
            for ax, split in zip(axrow, splits):
                vals = [r["wer"].get(split, float("nan")) for r in rs]
                bars = ax.bar(range(len(rs)), vals, color=colors)
                for b, v in zip(bars, vals):
                    ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=7)
                ax.set_xticks(range(len(rs)), labels, rotation=60, ha="right", fontsize=7)
                ax.set_title(f"{split}, labelled: {budget}" + (f" ({rs[0]['labelled_hours']:.2f} h)" if rs else ""))
                ax.grid(axis="y", alpha=0.3)
            axrow[0].set_ylabel("WER (greedy; blue: full context, orange: streaming)")
        fig.suptitle(title, fontsize=10)


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset-suffix", default="small", help="presets <suffix>, dual_<suffix>, prune_<suffix>, "
                                                            "pretrain_<suffix> (small | tiny)")
    ap.add_argument("--exp", default=None, help="experiment directory (default exp/<suffix>/dual)")
    ap.add_argument("--dense", default=None, help="dense streaming run every system starts from "
                                                  "(default exp/<suffix>/dense; trained first when missing)")
    ap.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS), help="systems to train")
    ap.add_argument("--steps", type=int, default=0, help="optimizer steps of every system (default: the dual preset's)")
    ap.add_argument("--sparsity", type=float, default=None, help="s* (default: the dual preset's dual.sparsity)")
    ap.add_argument("--pretrain-steps", type=int, default=0, help="pre-training steps (default: the preset's)")
    ap.add_argument("--test-subset", type=int, default=0, help="first N cuts of each split (0 = all)")
    ap.add_argument("--format", default="int8-sparse", choices=FORMATS, help="storage format of size_bytes")
    ap.add_argument("--labelled-hours", type=float, nargs="+", default=[],
                    help="low-resource budgets: one experiment per budget on a speaker-balanced subset of this many "
                         "train hours (EXP/labelled-<H>h, its own dense start), pre-training on all train audio")
    ap.add_argument("--dense-steps", type=int, default=0,
                    help="steps of a dense start trained here (default: the <suffix> preset's)")
    ap.add_argument("--out", default="bench/results/dual_mode.json")
    args, extra = ap.parse_known_args(argv)
    bad = [e for e in extra if not (e.startswith("--") and "." in e.split("=", 1)[0] and "=" in e)]
    if bad:
        raise SystemExit(f"unknown arguments {bad} (config overrides look like --section.key=value)")
    if any(e.split("=", 1)[0] in ("--train.max_steps", "--train.out_dir", "--sparsity.init_from") for e in extra):
        raise SystemExit("set the step count with --steps, run directories with --exp/--dense")
    if args.labelled_hours and args.dense:
        raise SystemExit("--dense is the start of the whole-split experiment; with --labelled-hours every "
                         "budget trains its own dense start on its subset (EXP/labelled-<H>h/dense)")
    if any(h <= 0 for h in args.labelled_hours):
        raise SystemExit(f"--labelled-hours must be > 0, got {args.labelled_hours}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    exps = [Experiment(args, extra, h) for h in sorted(args.labelled_hours)] or [Experiment(args, extra)]
    for exp in exps:
        exp.root.mkdir(parents=True, exist_ok=True)
        print(f"== {exp.root} (labelled: {exp.label}): {exp.steps} steps per system from {exp.dense}, "
              f"s* = {exp.s_star:g}, streaming ramp {exp.ramp} steps", flush=True)
        train_dense_init(exp)
        for system in [s for s in SYSTEMS if s in args.systems]:
            train_system(exp, system)

    print("== evaluate", flush=True)
    rows, tg, short, budgets = [], {}, {}, []
    for i, exp in enumerate(exps):
        r = evaluate_rows(exp, args.test_subset, args.format)
        # the SSL claim is about the smallest labelled budget: there it must win by 5 %
        tg[exp.label], short[exp.label] = targets(r, exp.steps, 0.05 if exp.hours and i == 0 else 0.0)
        rows += r
        start = run_state(exp.dense) or {}
        budgets.append({"labelled": exp.label, "labelled_hours": r[0]["labelled_hours"] if r else exp.hours or None,
                        "exp_dir": str(exp.root), "dense_init": str(exp.dense), "dense_init_steps": start.get("step"),
                        "rows": len(r)})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    exp = exps[0]
    plot(rows, out.with_suffix(".png"), f"{exp.base}: dual mode vs single-mode models ({exp.steps} steps each "
                                        f"from each budget's dense start, s*={exp.s_star:g})")
    curves = pretrain_curves(exp.dirs["pretrain"])
    pre_png = out.with_name(out.stem + "_pretrain.png")
    if curves["dense"] or curves["sparse"]:
        q = exp.pretrain_config().pretrain
        plot_pretrain(curves, pre_png, q.codebook_groups * q.codebook_entries)
    payload = {"preset_suffix": args.preset_suffix, "exp_dir": str(Path(args.exp or f"exp/{exp.base}/dual")),
               "dense_init": str(exp.dense), "steps": exp.steps, "stream_sparsity": exp.s_star, "ramp_steps": exp.ramp,
               "size_format": args.format, "test_subset": args.test_subset, "budgets": budgets, "rows": rows,
               "targets": tg, "shortfalls": short,
               "design": "per labelled budget, every system starts from that budget's dense start and trains `steps` "
                         "optimizer steps with the dual preset's optimizer on the budget's labelled audio; "
                         "dual-mode+ssl re-runs the dense start's recipe from the wav2vec 2.0 encoder pre-trained "
                         "on all train audio first (see bench/dual_mode.py's docstring)",
               "plot": str(out.with_suffix(".png")), "pretrain_curves": curves,
               "pretrain_plot": str(pre_png) if curves["dense"] or curves["sparse"] else None}
    write_result(out, payload, command=" ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]))
    splits = list(rows[0]["wer"]) if rows else []
    print(f"\n{'labelled':8} {'system':26} {'mode':6} {'s':>4} {'size MB':>8} " + " ".join(f"{s:>10}" for s in splits)
          + f" {'wall s':>8}")
    for r in rows:
        print(f"{r['labelled']:8} {r['system']:26} {r['mode']:6} {r['sparsity']:4g} {r['size_bytes'] / 1e6:8.3f} "
              + " ".join(f"{w:10.4f}" for w in r["wer"].values()) + f" {r['train_wall_s'] or 0:8.0f}")
    for label in tg:
        print(f"\ntargets ({label}): " + ", ".join(f"{k} {v['met']}" for k, v in tg[label].items()))
        for s in short[label]:
            print(f"  short: {s}")
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
