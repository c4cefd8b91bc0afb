"""The configuration's dataclasses: one section per concept, every option with its default, and the
checks of settings that cannot work together (``Config.validate``)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from omnisparse.config.rules import ConfigError, check_ranges



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
    # bf16: the encoder's forward (and so its backward) under CPU/CUDA bf16 autocast, everything after it
    # in fp32; fast only where the chip computes bf16 natively (AMX / AVX512-BF16 CPUs, GPUs), emulated
    # and several times slower elsewhere
    autocast: Literal["off", "bf16"] = "off"
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    init_encoder_from: str = ""  # run dir/checkpoint (e.g. `omnisparse pretrain`) whose encoder.* weights start this run
    # run dir/checkpoint of the same model (e.g. `omnisparse import-model` of a released one) whose weights
    # start this run at step 0 with a fresh optimizer
    init_from: str = ""
    trainable: list[str] = field(default_factory=list)  # parameter-name prefixes to train ([] = all; the rest frozen)


@dataclass
class DecodeConfig:
    method: Literal["greedy", "beam"] = "greedy"
    beam: int = 4
    max_symbols_per_frame: int = 4
    batch_size: int = 32
    lm: str = ""  # a `train-lm` run or checkpoint: shallow fusion in beam search ("" = none)
    lm_scale: float = 0.2  # weight of the LM's log-probability of every emitted token (with the bonus: chosen on small's dev)
    # with an LM: a reward per emitted token, against the deletions fusion causes (every LM
    # log-probability is a cost, so without it the fused search prefers shorter hypotheses)
    lm_token_bonus: float = 1.0
    token_bonus: float = 0.0  # the same reward in beam search without an LM
    # LSTM predictor: decode from a window of its last N tokens (0 = all, as trained); what a runtime
    # without decoder state computes (the sherpa-onnx export's --pred-history)
    pred_history: int = 0


@dataclass
class LMConfig:
    """The external token LM (``omnisparse train-lm``): an LSTM over the recogniser's BPE pieces,
    trained on text no dev or test utterance says (``data/lm_text.py``)."""

    out_dir: str = "exp/lm"
    text: str = ""  # "" = the corpus's train sentence pool; else a UTF-8 text file, one sentence per line
    embed_dim: int = 128
    hidden_dim: int = 384
    num_layers: int = 2
    dropout: float = 0.1
    max_steps: int = 3000
    batch_sentences: int = 64
    lr: float = 2.0e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    log_every: int = 20
    valid_every: int = 500  # and at the end: dev transcripts' per-token perplexity
    ckpt_every: int = 250
    keep_last: int = 2
    seed: int = 0
    threads: int = 0  # torch intra-op threads (0 = torch's default)


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
    latency_dtype: Literal["fp32", "int8"] = "fp32"  # kinds a cell's fastest time is taken among (onnxruntime: export dtype)
    latency_runtime: Literal["pytorch", "onnxruntime"] = "pytorch"  # where the table is measured
    latency_compact: Literal["none", "ffn", "rows"] = "ffn"  # onnxruntime: export-onnx --compact of every cell
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
    lm: LMConfig = field(default_factory=LMConfig)

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
        if self.decode.pred_history and m.pred_type != "lstm":
            raise ConfigError(f"decode.pred_history applies to the LSTM predictor; model.pred_type is {m.pred_type!r} "
                              f"(its window is model.pred_context)")
        if self.train.init_from and (self.train.init_encoder_from or self.sparsity.init_from):
            raise ConfigError("train.init_from starts every weight: do not also set train.init_encoder_from or "
                              "sparsity.init_from")
        if m.loss == "pruned" and m.prune_range < 1:
            raise ConfigError(f"model.prune_range must be >= 1 with model.loss=pruned, got {m.prune_range}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)
