"""What each numeric setting may take (:data:`RANGES`) and the one-line :class:`ConfigError` every
configuration check raises. Checked at load by ``Config.validate``."""

from __future__ import annotations

from typing import Any


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
    "decode": {"beam": ">= 1", "max_symbols_per_frame": ">= 1", "batch_size": ">= 1", "lm_scale": ">= 0", "lm_token_bonus": ">= 0", "token_bonus": ">= 0", "pred_history": ">= 0"},
    "lm": {"embed_dim": "[1, 65536]", "hidden_dim": "[1, 65536]", "num_layers": "[1, 64]", "dropout": "[0, 1)",
           "max_steps": ">= 0", "batch_sentences": ">= 1", "lr": "> 0", "warmup_steps": ">= 0", "weight_decay": ">= 0",
           "grad_clip": "> 0", "log_every": ">= 1", "valid_every": ">= 1", "ckpt_every": ">= 1", "keep_last": ">= 0",
           "threads": ">= 0"},
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


def check_ranges(cfg: Any) -> None:
    """ConfigError naming the first setting of :data:`RANGES` that the Config ``cfg`` holds outside its range."""
    for section in RANGES:
        check_section_ranges(section, getattr(cfg, section))
    if len(cfg.train.betas) != 2:
        raise ConfigError(f"train.betas must be 2 numbers in [0, 1), got {cfg.train.betas!r}")
