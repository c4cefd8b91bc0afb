"""The commands that open a model directory (any run, checkpoint or exported sub-network, with
:func:`omnisparse.export.loading.load_model`) and run it: ``omnisparse eval`` (:func:`evaluate_checkpoint`)
and ``omnisparse transcribe`` (:func:`transcribe_files`).

They sit above ``decoding`` (the search, streaming, scoring and audio code they run), ``export`` (the
loading of exports) and ``deploy.fast`` (the CPU kernels ``--fast`` applies), so the inference code
training validates with imports none of them.

``--fast`` (``fast=True``) first runs the model through :func:`omnisparse.deploy.fast.optimize_for_cpu`
(per-Linear execution kind chosen by timing on this machine, feed-forward shrinking; ``dtype="int8"``
for int8 combined with sparsity; ``plan`` re-applies a saved plan without timing).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

from omnisparse.config import apply_overrides, parse_override
from omnisparse.data.splits import load_split_cuts
from omnisparse.decoding.evaluate import evaluate_cuts, fusion_lm
from omnisparse.decoding.transcribe import (OFFLINE_MAX_S, SAMPLE_RATE, AudioError, read_audio, transcribe_samples,
                                            transcribe_stream)
from omnisparse.deploy.fast import optimize_for_cpu
from omnisparse.export.loading import load_model
from omnisparse.io.atomic import atomic_write_text
from omnisparse.io.checkpoint import CheckpointError
from omnisparse.sparsity.space import parse_subnet, space_and_bank


def evaluate_checkpoint(model_path: str, splits: list[str] | None = None, method: str | None = None,
                        mode: str | None = None, out_dir: str | None = None, overrides: list[str] | None = None,
                        subnet: str | dict | None = None) -> dict:
    """``omnisparse eval``: WER per split, written to ``OUT/wer.json`` and ``OUT/hyps_<split>.txt``.

    ``subnet``: a sub-network to decode instead of the dense one (``"uniform:S"``, a JSON file or a
    dict ``{gene: sparsity}``); masks come from the checkpoint's weights and its ``sparsity`` settings.
    ``model_path`` may also be an exported sub-network directory (then ``subnet`` must be None)."""
    overrides = overrides or []
    model_overrides = {}
    for ov in overrides:
        parts, value = parse_override(ov)
        if parts[0] == "model":
            model_overrides[".".join(parts[1:])] = value
    lm = load_model(model_path, model_overrides=model_overrides)
    cfg = apply_overrides(lm.config, [ov for ov in overrides if not parse_override(ov)[0][0] == "model"]).validate()
    if method:
        cfg.decode.method = method
    mode = mode or lm.trained_modes[0]
    lm.check_mode(mode)
    splits = splits or [cfg.data.dev_split, *cfg.data.test_splits]
    subnet_config = None
    if subnet is not None and lm.export_meta is not None:
        raise CheckpointError(f"{lm.path} is an exported sub-network (config fixed at export); "
                              "--subnet applies to supernet checkpoints")
    if subnet is not None:
        space, bank = space_and_bank(lm.model, cfg.sparsity, refresh=True)
        subnet_config = parse_subnet(subnet, space)
        bank.apply(subnet_config)
    # default: RUN_DIR/eval for a checkpoint, EXPORT_DIR/eval for an exported sub-network
    out = Path(out_dir) if out_dir else ((lm.path if lm.export_meta is not None else lm.path.parent) / "eval")
    results = {}
    for split in splits:
        manifest_skips: dict[str, int] = {}
        cuts = load_split_cuts(cfg, [split], report=manifest_skips)
        r = evaluate_cuts(lm.model, cuts, lm.tokenizer, lm.normalizer, mode=mode, decode=cfg.decode,
                          on_the_fly=cfg.data.on_the_fly_features, progress=True)
        for k, v in manifest_skips.items():  # cuts the manifest held but that could not be used
            r["skipped"][k] = r["skipped"].get(k, 0) + v
        lines = [f"{h['id']}\tref: {h['ref']}\n{h['id']}\thyp: {h['hyp']}" for h in r.pop("hyps")]
        atomic_write_text(out / f"hyps_{split}.txt", "\n".join(lines) + "\n")
        results[split] = r
    atomic_write_text(out / "wer.json", json.dumps({"model": str(lm.path), "mode": mode, "method": cfg.decode.method,
                                                    "subnet": subnet_config, "results": results}, indent=2))
    return results


def transcribe_files(model_path: str, audio: list[str], stream: bool = False, method: str = "greedy",
                     fast: bool = False, dtype: str = "fp32", plan: str | None = None, lm_path: str = "",
                     lm_scale: float | None = None, lm_token_bonus: float | None = None) -> int:
    """``omnisparse transcribe``: print ``PATH<TAB>text`` per audio file (offline, or streaming with
    partial results). A missing, unreadable or empty file prints one line on stderr and makes the
    exit status 1; the other files are still transcribed. ``lm_path``: a ``train-lm`` run fused into
    beam search (weight ``lm_scale`` and reward per token ``lm_token_bonus``, defaults the model's
    ``decode`` settings)."""
    lm = load_model(model_path)
    lm.config.decode.method, lm.config.decode.lm = method, lm_path
    if lm_scale is not None:
        lm.config.decode.lm_scale = lm_scale
    if lm_token_bonus is not None:
        lm.config.decode.lm_token_bonus = lm_token_bonus
    fusion = fusion_lm(lm.config.decode, lm.tokenizer)
    if fast or plan:
        lm.model, _ = optimize_for_cpu(lm.model, plan=plan, dtype=dtype, inplace=True)
    if stream:
        lm.check_mode("stream")
    status = 0
    for path in audio:
        try:
            samples = read_audio(path)
        except AudioError as e:
            print(f"omnisparse: error: {e}", file=sys.stderr)
            status = 1
            continue
        try:
            if stream:
                text = transcribe_stream(lm, samples, name=path, method=method, fusion=fusion)
            elif samples.shape[0] > OFFLINE_MAX_S * SAMPLE_RATE:  # offline attention would need T^2 memory
                if "stream" not in lm.trained_modes:
                    raise AudioError(f"{path}: {samples.shape[0] / SAMPLE_RATE:.0f} s of audio; this model decodes "
                                     f"only offline (mode {lm.trained_modes[0]!r}), at most {OFFLINE_MAX_S:g} s per file")
                text = transcribe_stream(lm, samples, out=io.StringIO(), name=path, method=method,
                                         fusion=fusion)  # no partials
            else:
                text = transcribe_samples(lm, samples, method=method, fusion=fusion)
        except ValueError as e:  # fbank's input checks (e.g. amplitudes so large the power overflows)
            print(f"omnisparse: error: {e if isinstance(e, AudioError) else f'{path}: {e}'}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}\t{text}", flush=True)
    return status
