"""The commands that open a model directory (any run, checkpoint or exported sub-network) and run it:
``omnisparse transcribe`` (:func:`transcribe_files`).

They sit above ``decoding`` (the search, streaming and audio code they run) and ``deploy.fast`` (the
CPU kernels ``--fast`` applies), so the inference code training validates with imports none of them.

``--fast`` (``fast=True``) first runs the model through :func:`omnisparse.deploy.fast.optimize_for_cpu`
(per-Linear execution kind chosen by timing on this machine, feed-forward shrinking; ``dtype="int8"``
for int8 combined with sparsity; ``plan`` re-applies a saved plan without timing).
"""

from __future__ import annotations

import sys

from omnisparse.decoding.loading import load_model
from omnisparse.decoding.transcribe import AudioError, read_audio, transcribe_samples, transcribe_stream
from omnisparse.deploy.fast import optimize_for_cpu


def transcribe_files(model_path: str, audio: list[str], stream: bool = False, method: str = "greedy",
                     fast: bool = False, dtype: str = "fp32", plan: str | None = None) -> int:
    """``omnisparse transcribe``: print ``PATH<TAB>text`` per audio file (offline, or streaming with
    partial results). A missing, unreadable or empty file prints one line on stderr and makes the
    exit status 1; the other files are still transcribed."""
    lm = load_model(model_path)
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
            text = transcribe_stream(lm, samples, name=path) if stream else transcribe_samples(lm, samples, method=method)
        except ValueError as e:  # fbank's input checks (e.g. amplitudes so large the power overflows)
            print(f"omnisparse: error: {path}: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{path}\t{text}", flush=True)
    return status
