"""Typed configuration: dataclasses, YAML presets in ``omnisparse/conf/`` and ``--section.key=value`` overrides.

A run's configuration is one :class:`Config` with one section per concept. Presets are YAML files
holding any subset of the sections; every key must name a real field (a typo is an error, not a
silently ignored default). Overrides use dotted paths::

    omnisparse train --config small --train.lr=2e-3 --model.n_layers=8

Values of overrides are parsed as YAML scalars/lists (``--data.train_splits=[train,extra]``).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

CONF_DIR = Path(__file__).resolve().parent / "conf"  # inside the package: presets work from any install


@dataclass
class DataConfig:
    """Where the corpus lives and how batches are made."""

    corpus_dir: str = "data/small"  # holds manifests/, fbank/, lang/ (see data/layout.py)
    train_splits: list[str] = field(default_factory=lambda: ["train"])
    dev_split: str = "dev"
    test_splits: list[str] = field(default_factory=lambda: ["test-clean", "test-other"])
    vocab_size: int = 256  # sentencepiece pieces, blank included (id 0)
    on_the_fly_features: bool = False  # compute fbank per batch instead of reading stored features
    max_duration: float = 60.0  # seconds of audio per batch
    num_buckets: int = 10
    max_cut_duration: float = 20.0  # longer utterances are skipped (counted) to bound memory
    num_workers: int = 0
    spec_augment: bool = True
    spec_augment_start_epoch: int = 0  # epochs before this one are not masked (an under-fitted model learns faster unmasked)
    freq_masks: int = 2
    freq_mask_width: int = 15  # mel bins
    time_masks: int = 2
    time_mask_fraction: float = 0.1  # max fraction of frames per time mask
    dev_subset: int = 0  # 0 = whole dev split; otherwise the first N cuts (validation speed)
    train_hours: float = 0.0  # > 0: train on a speaker-balanced subset of this many hours (data/subset.py)
    train_subset_seed: int = 0


@dataclass
class ModelConfig:
    """Streaming RNN-T: subsampling -> chunked-attention encoder -> predictor -> joiner.

    Time units: ``chunk_size`` and ``lookahead`` count encoder frames (after subsampling, i.e.
    ``10 ms * subsampling`` each); ``left_chunks`` counts chunks.
    """

    feat_dim: int = 80
    subsampling: int = 4  # 4 or 8: encoder frame = 40 or 80 ms
    d_model: int = 144
    n_heads: int = 4
    ffn_dim: int = 576
    n_layers: int = 6
    conv_kernel: int = 15  # causal depthwise conv module in each block; 0 disables it
    dropout: float = 0.1
    rel_pos_clip: int = 64  # relative-position bias distance clip (encoder frames)
    chunk_size: int = 4
    left_chunks: int = 8
    lookahead: int = 1
    vocab_size: int = 256  # filled from the tokenizer at train time
    blank_id: int = 0
    pred_type: Literal["lstm", "stateless"] = "lstm"
    pred_dim: int = 256
    pred_layers: int = 1
    pred_context: int = 2  # stateless predictor context (tokens)
    joiner_dim: int = 256
    ctc_weight: float = 0.0  # auxiliary CTC head on the encoder (0 = off)
    loss: Literal["full", "pruned"] = "full"  # RNN-T loss (k2 pruned transducer: a linear joint picks a band of symbols per frame)
    prune_range: int = 5  # loss=pruned: symbols per frame the tanh joiner sees (S)
    simple_loss_scale: float = 0.5  # loss=pruned: weight of the simple (linear-joint) RNN-T loss
    simple_lm_scale: float = 0.25  # loss=pruned: k2 smoothing of the simple loss, LM-only share (icefall 0.25)
    simple_am_scale: float = 0.0  # loss=pruned: AM-only share
    simple_proj: bool = False  # loss=pruned: the simple joint gets its own Linear heads on the encoder and predictor outputs (as k2/icefall) instead of reusing the joiner
    prune_warmup_steps: int = 0  # loss=pruned: k2 warm-up, scales go (1, 0.1) -> (simple_loss_scale, 1) over these steps


@dataclass
class TrainConfig:
    """Optimiser, schedule, checkpoints and logging of one training run."""

    out_dir: str = "exp/dense"
    seed: int = 42
    mode: Literal["stream", "full"] = "stream"  # attention mode of training forward
    max_steps: int = 2000
    max_wall_s: float = 0.0  # stop (with a checkpoint) after this many seconds; 0 = no limit
    lr: float = 2e-3
    weight_decay: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    warmup_steps: int = 200
    decay: Literal["cosine", "noam", "constant"] = "cosine"
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    log_every: int = 10
    valid_every: int = 250
    ckpt_every: int = 100
    keep_last: int = 3
    threads: int = 0  # torch intra-op threads; 0 = let torch decide
    device: Literal["auto", "cpu", "cuda"] = "auto"
    loss_dtype: Literal["float32", "float64"] = "float32"  # RNN-T recursion precision
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    init_encoder_from: str = ""  # run dir/checkpoint (e.g. `omnisparse pretrain`) whose encoder.* weights start this run


@dataclass
class DecodeConfig:
    method: Literal["greedy", "beam"] = "greedy"
    beam: int = 4
    max_symbols_per_frame: int = 4
    batch_size: int = 32


@dataclass
class SparsityConfig:
    """Masks, search space, supernet training (``train --supernet``) and pruning baselines (``prune``)."""

    granularity: Literal["unstructured", "block", "row"] = "unstructured"
    block: int = 8  # side of the square blocks of the `block` granularity
    grid: list[float] = field(default_factory=lambda: [round(0.1 * i, 1) for i in range(10)])
    prune_pred_joiner: bool = False  # also prune the predictor (LSTM) and joiner Linears
    init_from: str = ""  # dense checkpoint (or run dir) to start from; "" = train dense first
    dense_steps: int = 0  # stage 1 in the same run: dense-only steps before the sandwich (when no init_from)
    # supernet (sandwich rule)
    n_random: int = 2  # random sub-networks per step besides the dense and the sparsest
    # which sub-networks a step trains on which batches (sparsity/paths.py): the sandwich on one batch, the
    # sandwich with a batch per path, or one path per optimizer step
    schedule: Literal["sandwich-same-batch", "sandwich-split", "one-per-step"] = "sandwich-same-batch"
    path_probs: list[float] = field(default_factory=list)  # one-per-step: [dense, sparsest, random]; [] = rotation
    ddp_paths: Literal["same", "per_rank"] = "same"  # DDP: every rank trains every path, or each rank its share
    max_sparsity: float = 0.9  # final sparsity of the sparsest sub-network (every gene)
    ramp_steps: int = 1000  # cubic ramp of the max sparsity from 0 (supernet steps)
    distill: bool = False  # in-place distillation: dense joiner posteriors teach the sparse paths
    distill_weight: float = 1.0
    valid_ladder: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.8, 0.9])  # uniform configs validated
    # individually pruned baseline (gradual magnitude pruning, then fine-tuning with fixed masks)
    target: float = 0.7  # uniform sparsity of every gene
    prune_steps: int = 1000  # length of the cubic pruning schedule; fine-tuning runs until train.max_steps
    prune_every: int = 50  # steps between mask updates during the schedule


@dataclass
class SearchConfig:
    """Evolutionary search of the supernet's sub-networks (``omnisparse search``); defaults from AlphaNet's
    evolutionary search (Wang et al., ICML 2021). Sizes are bytes of the ``format`` artefact, in MB = 1e6 bytes."""

    supernet: str = ""  # supernet run dir or checkpoint to search
    out_dir: str = ""  # where history.json, pareto.json, state live; "" = <supernet run dir>/search
    format: Literal["fp32-dense", "fp32-sparse", "int8-sparse"] = "int8-sparse"  # storage format the sizes are measured in
    size_min_mb: float = 0.0  # resource range; 0 = the sparsest sub-network's size
    size_max_mb: float = 0.0  # 0 = the dense network's size
    bucket_mb: float = 0.1  # Pareto table: best WER per size bucket of this width
    population: int = 512  # initial parents: the sparsest config (+ uniform ones) + random configs in the range
    generations: int = 20
    mutations: int = 128  # children per generation from mutating a random Pareto member
    crossovers: int = 128  # children per generation from uniform crossover of two Pareto members
    mutate_prob: float = 0.2  # per-gene re-draw probability (to a different grid value)
    max_tries: int = 100  # rejection sampling: draws per child before giving up on the range
    dev_subset: int = 200  # fitness set: the first N cuts of data.dev_split
    fitness: Literal["wer", "loss"] = "wer"  # greedy WER | RNN-T loss per reference token (search/evaluator.py)
    sensitivity: bool = False  # measure per-gene sensitivity and seed its ladder (search/evolution.py)
    sensitivity_spread: int = 2  # grid steps around each level for the least / most sensitive genes
    rerank_per_bucket: int = 0  # re-rank the best N per front bucket by WER on rerank_subset (0 = off)
    rerank_subset: int = 0  # re-ranking set: the first N cuts of data.dev_split (0 = all)
    seed: int = 0
    seed_uniform: bool = True  # every uniform config inside the range is an initial parent
    # cost: bytes (front on size) | latency (front on measured latency, search/latency.py) | both (front on
    # one, a constraint on the other: max_latency_ms -> front on bytes; size_max_mb -> front on latency)
    cost: Literal["bytes", "latency", "both"] = "bytes"
    front: Literal["", "bytes", "latency"] = ""  # with cost=both ("" = the one without a constraint set)
    max_latency_ms: float = 0.0  # per streaming step (one chunk, batch 1); latency: range top (0 = none)
    min_latency_ms: float = 0.0  # latency: range bottom
    bucket_ms: float = 0.02  # Pareto table bucket width when the front is on latency
    latency_table: str = ""  # reuse this latency table JSON instead of measuring (or the cache)
    latency_cache_dir: str = ""  # "" = $OMNISPARSE_CACHE/latency or ~/.cache/omnisparse/latency; none = off
    latency_dtype: Literal["fp32", "int8"] = "fp32"  # kinds a cell's fastest time is taken among
    latency_threads: int = 1
    latency_repeats: int = 5  # timed calls per kind and cell (cold cache, median)


@dataclass
class PretrainConfig:
    """wav2vec 2.0 self-supervised pre-training of the encoder (``omnisparse pretrain``). Defaults: fairseq
    ``Wav2Vec2Config`` / ``wav2vec2_base_librispeech``."""

    mask_prob: float = 0.65  # fairseq convention: mask_prob / mask_length of the frames are span starts
    mask_length: int = 10  # span length, encoder frames
    min_masks: int = 2  # span starts per utterance at least (fairseq apply_mask)
    num_negatives: int = 100  # distractors per masked frame, from other masked frames of the same utterance
    logit_temp: float = 0.1  # cosine similarity / logit_temp
    codebook_groups: int = 2  # G
    codebook_entries: int = 320  # V per group
    codevector_dim: int = 256  # quantized target and final projection dim (fairseq final_dim)
    temp_max: float = 2.0  # Gumbel temperature: max(temp_max * temp_decay ** step, temp_min)
    temp_min: float = 0.5
    temp_decay: float = 0.999995
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 10.0  # mean square of the subsampling output before its LayerNorm
    supernet: bool = True  # per batch: (dense, full) + (masks at `sparsity`, stream) losses, one step
    sparsity: float = 0.7  # s*: uniform magnitude sparsity of every encoder gene on the sparse path
    sparsity_ramp_steps: int = 0  # cubic ramp of s* from 0 over this many steps (0 = s* from step 0)
    audio_dir: str = ""  # pre-train on every wav/flac under this directory instead of the corpus's train splits
    audio_stats: Literal["auto", "corpus", "audio"] = "auto"  # audio_dir normalisation (auto: corpus stats if present)
    valid_batches: int = 4  # dev batches for the validation contrastive loss (0 = no validation)


@dataclass
class DualModeConfig:
    """Dual-mode training (``omnisparse train --dual-mode``; Liu et al., SLT 2022): one
    weight set trained as a dense full-context server model and a sparse streaming on-device model.
    Masks, granularity, grid and the dense start come from the ``sparsity`` section."""

    sparsity: float = 0.7  # s*: uniform sparsity of every gene on the streaming path, in (0, max(sparsity.grid)]
    full_weight: float = 1.0  # loss weight of the (dense, full-context) path
    stream_weight: float = 1.0  # loss weight of the (s*, streaming) path and of the extra streaming paths
    extra_sparsities: int = 0  # extra streaming paths per step at random configs from the grid up to the current s
    ramp_steps: int = 1000  # cubic ramp of the streaming sparsity from 0 to s* (0 = s* from the first step)
    stream_dropout: bool = False  # dropout on the s* streaming path too (off, like the supernet's sparse paths)
    distill: bool = False  # in-place distillation: the full path's lattice posteriors teach the streaming paths
    distill_weight: float = 1.0


@dataclass
class AugmentConfig:
    """On-the-fly audio augmentation of training utterances (``data/augment.py``); dev and test are never
    augmented. When enabled, train batches are computed from audio, stored features unused. Per utterance:
    speed -> reverberation -> noise -> gain, each random choice keyed by (train.seed, epoch, cut id)."""

    enabled: bool = False
    # Epochs before this one train on the clean audio: a model that has not yet learned to align
    # gets stuck on the blank/LM plateau when noise and reverberation come from the first step.
    start_epoch: int = 0
    speed_prob: float = 1.0  # chance of a speed draw; the factor is then uniform over speed_factors
    speed_factors: list[float] = field(default_factory=lambda: [0.9, 1.0, 1.1])  # > 1 = faster, shorter
    reverb_prob: float = 0.3
    rir_bank_size: int = 64  # simulated rooms (pyroomacoustics, once, ~0.4 s each; cached as .npz)
    rir_seed: int = 0
    rt60: list[float] = field(default_factory=lambda: [0.2, 0.8])  # s, the Sabine target range of the rooms
    room_min: list[float] = field(default_factory=lambda: [3.0, 3.0, 2.4])  # m, length / width / height
    room_max: list[float] = field(default_factory=lambda: [10.0, 8.0, 4.0])
    rir_cache_dir: str = ""  # "" = <data.corpus_dir>/augment
    noise_prob: float = 0.5
    snr_db: list[float] = field(default_factory=lambda: [5.0, 20.0])  # active speech / noise power, uniform
    coloured_weight: float = 1.0  # relative chance of each noise kind
    babble_weight: float = 1.0
    music_weight: float = 1.0
    colours: list[str] = field(default_factory=lambda: ["white", "pink", "brown"])
    babble_talkers: list[int] = field(default_factory=lambda: [3, 7])  # other train utterances summed, inclusive
    babble_pool: int = 200  # train utterances the talkers come from (0 = all of them)
    music_dir: str = "/usr/share/asterisk/moh"  # music on hold (CC-BY-SA); absent = music off, one warning
    gain_db: list[float] = field(default_factory=lambda: [-6.0, 6.0])  # uniform; peaks over 1 are scaled down

    def validate(self) -> None:
        """ConfigError (one line) for values no augmentation can use."""
        if self.start_epoch < 0:
            raise ConfigError(f"augment.start_epoch must be >= 0, got {self.start_epoch}")
        for key in ("speed_prob", "reverb_prob", "noise_prob"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"augment.{key} must be in [0, 1], got {getattr(self, key)}")
        for key in ("rt60", "snr_db", "gain_db", "babble_talkers"):
            v = getattr(self, key)
            if len(v) != 2 or v[0] > v[1]:
                raise ConfigError(f"augment.{key} must be an ordered pair [low, high], got {v}")
        if not self.speed_factors or min(self.speed_factors) <= 0:
            raise ConfigError(f"augment.speed_factors must be non-empty and > 0, got {self.speed_factors}")
        if self.rt60[0] <= 0:
            raise ConfigError(f"augment.rt60 must be > 0 s, got {self.rt60}")
        if len(self.room_min) != 3 or len(self.room_max) != 3 or min(self.room_min) <= 1.0 \
                or any(a > b for a, b in zip(self.room_min, self.room_max)):
            raise ConfigError(f"augment.room_min / room_max must be 3 sides each, over 1 m, min <= max; got "
                              f"{self.room_min} / {self.room_max}")
        if self.rir_bank_size < 1:
            raise ConfigError(f"augment.rir_bank_size must be >= 1, got {self.rir_bank_size}")
        weights = (self.coloured_weight, self.babble_weight, self.music_weight)
        if min(weights) < 0 or (self.noise_prob > 0 and sum(weights) == 0):
            raise ConfigError(f"augment noise weights must be >= 0, not all 0 when noise_prob > 0; got {weights}")
        unknown = [c for c in self.colours if c not in ("white", "pink", "brown")]
        if unknown or (self.coloured_weight > 0 and not self.colours):
            raise ConfigError(f"augment.colours must be some of white, pink, brown; got {self.colours}")
        if self.babble_talkers[0] < 1 or self.babble_pool < 0:
            raise ConfigError(f"augment.babble_talkers must be >= 1 and babble_pool >= 0; got "
                              f"{self.babble_talkers}, {self.babble_pool}")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    dual: DualModeConfig = field(default_factory=DualModeConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def validate(self) -> "Config":
        """ConfigError (one line) for settings that cannot work together, at load rather than mid-run."""
        check_ranges(self)
        self.augment.validate()
        if self.data.spec_augment_start_epoch < 0:
            raise ConfigError(f"data.spec_augment_start_epoch must be >= 0, got {self.data.spec_augment_start_epoch}")
        m = self.model
        if m.chunk_size < 1:
            raise ConfigError(f"model.chunk_size must be >= 1 encoder frame, got {m.chunk_size}")
        if m.d_model % m.n_heads:
            raise ConfigError(f"model.d_model {m.d_model} must be divisible by model.n_heads {m.n_heads}")
        probs = self.sparsity.path_probs
        if probs and (len(probs) != 3 or min(probs) < 0 or sum(probs) <= 0):
            raise ConfigError(f"sparsity.path_probs must be [] (rotation) or 3 weights >= 0 for dense, sparsest, "
                              f"random, not all 0; got {probs}")
        if self.search.fitness == "loss" and self.search.rerank_per_bucket < 1:
            raise ConfigError("search.fitness=loss needs search.rerank_per_bucket >= 1: the reported front is "
                              "ranked by WER, decoded at the end")
        if m.loss == "pruned" and m.prune_range < 1:
            raise ConfigError(f"model.prune_range must be >= 1 with model.loss=pruned, got {m.prune_range}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


class ConfigError(ValueError):
    """A preset or override names an unknown key or holds a value of the wrong type."""


# The values each numeric setting may take, checked at load (``Config.validate``), so that a value no
# run can use fails in one line before anything starts rather than mid-run (a modulo by zero, a
# negative learning rate that trains, an empty model, one too large to allocate). ``">= 1"``, ``"> 0"``:
# a bound; ``"[0, 1)"``: an interval; ``"4 | 8"``: the choices; list fields: every element. ``dual`` and ``augment`` validate
# themselves (``check_dual_config``, ``AugmentConfig.validate``).
RANGES: dict[str, dict[str, str]] = {
    "data": {"vocab_size": ">= 2", "max_duration": "> 0", "num_buckets": ">= 1", "max_cut_duration": "> 0",
             "num_workers": ">= 0", "freq_masks": ">= 0", "freq_mask_width": ">= 0", "time_masks": ">= 0",
             "time_mask_fraction": "[0, 1]", "dev_subset": ">= 0"},
    "model": {"feat_dim": ">= 1", "subsampling": "4 | 8", "d_model": "[1, 65536]", "n_heads": ">= 1",
              "ffn_dim": "[1, 262144]", "n_layers": "[0, 1024]", "conv_kernel": ">= 0", "dropout": "[0, 1)", "rel_pos_clip": ">= 1",
              "left_chunks": ">= -1", "lookahead": ">= 0", "vocab_size": ">= 2", "blank_id": ">= 0",
              "pred_dim": "[1, 65536]", "pred_layers": "[1, 64]", "pred_context": "[1, 64]", "joiner_dim": "[1, 65536]",
              "ctc_weight": ">= 0", "simple_loss_scale": ">= 0", "simple_lm_scale": "[0, 1]",
              "simple_am_scale": "[0, 1]", "prune_warmup_steps": ">= 0"},
    "train": {"max_steps": ">= 0", "max_wall_s": ">= 0", "lr": "> 0", "weight_decay": ">= 0", "betas": "[0, 1)",
              "warmup_steps": ">= 0", "min_lr_ratio": "[0, 1]", "grad_clip": "> 0", "log_every": ">= 1",
              "ckpt_every": ">= 1", "keep_last": ">= 0", "threads": ">= 0", "max_bad_steps": ">= 1"},
    "decode": {"beam": ">= 1", "max_symbols_per_frame": ">= 1", "batch_size": ">= 1"},
    "sparsity": {"block": ">= 1", "grid": "[0, 1)", "n_random": ">= 0", "path_probs": ">= 0", "max_sparsity": "[0, 1)",
                 "ramp_steps": ">= 0", "distill_weight": ">= 0", "valid_ladder": "[0, 1)", "target": "[0, 1)",
                 "prune_steps": ">= 0", "prune_every": ">= 1", "dense_steps": ">= 0"},
    "search": {"size_min_mb": ">= 0", "size_max_mb": ">= 0", "bucket_mb": "> 0", "population": ">= 1",
               "generations": ">= 0", "mutations": ">= 0", "crossovers": ">= 0", "mutate_prob": "[0, 1]",
               "max_tries": ">= 1", "dev_subset": ">= 0", "sensitivity_spread": ">= 0", "rerank_per_bucket": ">= 0",
               "rerank_subset": ">= 0", "max_latency_ms": ">= 0", "min_latency_ms": ">= 0", "bucket_ms": "> 0",
               "latency_threads": ">= 1", "latency_repeats": ">= 1"},
    "pretrain": {"mask_prob": "[0, 1]", "mask_length": ">= 1", "min_masks": ">= 0", "num_negatives": ">= 1",
                 "logit_temp": "> 0", "codebook_groups": ">= 1", "codebook_entries": ">= 1", "codevector_dim": ">= 1",
                 "temp_max": "> 0", "temp_min": "> 0", "temp_decay": "(0, 1]", "diversity_weight": ">= 0",
                 "feature_penalty_weight": ">= 0", "sparsity": "[0, 1)", "sparsity_ramp_steps": ">= 0",
                 "valid_batches": ">= 0"},
}


def _within(x: float, rule: str) -> bool:
    if "|" in rule:
        return x in [float(v) for v in rule.split("|")]
    if rule[0] in "[(":
        lo, hi = (float(v) for v in rule[1:-1].split(","))
        return (lo <= x if rule[0] == "[" else lo < x) and (x <= hi if rule[-1] == "]" else x < hi)
    op, bound = rule.split()
    return x >= float(bound) if op == ">=" else x > float(bound)


def check_section_ranges(section: str, sec: Any) -> None:
    """ConfigError naming the first setting of ``RANGES[section]`` that ``sec`` holds outside its range."""
    for key, rule in RANGES.get(section, {}).items():
        value = getattr(sec, key)
        values = value if isinstance(value, list) else [value]
        if not all(_within(v, rule) for v in values):
            what = "every element " if isinstance(value, list) else ""
            how = "in " if rule[0] in "[(" else "one of " if "|" in rule else ""
            raise ConfigError(f"{section}.{key}: {what}must be {how}{rule}, got {value!r}")


def check_ranges(cfg: "Config") -> None:
    """ConfigError naming the first setting of :data:`RANGES` outside its range."""
    for section in RANGES:
        check_section_ranges(section, getattr(cfg, section))
    if len(cfg.train.betas) != 2:
        raise ConfigError(f"train.betas must be 2 numbers in [0, 1), got {cfg.train.betas!r}")


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = get_origin(typ)
    if origin is list:
        (inner,) = get_args(typ)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, where) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not math.isfinite(value)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            raise ConfigError(f"{where}: expected a finite number, got {value!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return value
    if origin is Literal:
        choices = get_args(typ)
        if value not in choices:
            raise ConfigError(f"{where}: must be one of {' | '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _update(obj: Any, values: dict[str, Any], where: str) -> None:
    hints = get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown key {where}{key!r}; known: {sorted(names)}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a mapping")
            _update(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}{key}"))


def resolve_preset(name_or_path: str | Path) -> Path:
    """``small`` -> the package preset ``omnisparse/conf/small.yaml``; a path is returned as is (must exist)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p
    cand = CONF_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        known = sorted(q.stem for q in CONF_DIR.glob("*.yaml"))
        raise ConfigError(f"no preset {name_or_path!r}; known presets: {known}")
    return cand


def parse_override(text: str) -> tuple[list[str], Any]:
    """``--train.lr=1e-3`` -> (["train", "lr"], 0.001)."""
    body = text[2:] if text.startswith("--") else text
    if "=" not in body:
        raise ConfigError(f"override must look like --section.key=value, got {text!r}")
    key, raw = body.split("=", 1)
    parts = key.replace("-", "_").split(".")
    if len(parts) < 2:
        raise ConfigError(f"override key needs a section, e.g. --train.lr=1e-3 (got {text!r})")
    if raw == "":
        return parts, ""
    try:
        return parts, yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"override {text[:80]!r}: the value is not valid YAML ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if problem and mark is not None:  # a YAML syntax error: what and where
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_preset(preset: str | Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The preset's sections, preceded by those of its ``base:`` chain (a preset name or path)."""
    path = resolve_preset(preset).resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular `base:` chain")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{preset}: cannot read the config file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{preset}: not a YAML config (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{preset}: not valid YAML ({_first_line(e)})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{preset}: top level must be a mapping of sections")
    base = data.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{preset}: `base:` must name a preset or a YAML file, got {base!r}")
    return (_read_preset(base, (*seen, path)) if base else []) + [data]


def load_config(preset: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- the preset's ``base:`` chain <- the preset <- ``--section.key=value`` overrides."""
    cfg = Config()
    if preset is not None:
        for data in _read_preset(preset):
            try:
                _update(cfg, data, "")
            except ConfigError as e:
                raise ConfigError(f"{preset}: {e}") from None
    apply_overrides(cfg, overrides or [])
    return cfg.validate()


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``--section.key=value`` strings to ``cfg`` in place (and return it)."""
    for ov in overrides:
        parts, value = parse_override(ov)
        nested: dict[str, Any] = {parts[-1]: value}
        for p in reversed(parts[:-1]):
            nested = {p: nested}
        _update(cfg, nested, "")
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    _update(cfg, data, "")
    return cfg.validate()


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    m = ModelConfig()
    _update(m, data, "model.")
    check_section_ranges("model", m)
    return m
