"""CPU timing: microseconds per call of a module on one input (its weights kept in cache, or evicted
before every call by reading a model-sized buffer), and of one steady-state streaming encoder step at
batch 1. What :mod:`omnisparse.deploy.fast` chooses kinds by and :mod:`omnisparse.search.latency`
builds its table with.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn


def time_call(fn: Callable[[Tensor], Any], x: Tensor, repeats: int = 5, inner: int = 10,
              flush: Optional[Tensor] = None) -> float:
    """Microseconds per call ``fn(x)``, without autograd, after two warm-up calls. Without ``flush``:
    median over ``repeats`` of the mean of ``inner`` back-to-back calls (weights stay in cache).
    With ``flush`` (a buffer read before every timed call, evicting what the rest of a model would):
    median of ``repeats + 2`` single calls."""
    with torch.no_grad():
        fn(x)
        fn(x)
        times = []
        if flush is not None:
            for _ in range(repeats + 2):
                flush.sum()
                t0 = time.perf_counter()
                fn(x)
                times.append((time.perf_counter() - t0) * 1e6)
        else:
            for _ in range(repeats):
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn(x)
                times.append((time.perf_counter() - t0) / inner * 1e6)
    return float(statistics.median(times))


def flush_buffer(model: nn.Module) -> Tensor:
    """A float32 buffer as large as all of ``model``'s parameters and buffers (at least 256 KiB): reading
    it between two calls of one layer stands for the rest of a streaming step touching its weights."""
    nbytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    return torch.ones(max(nbytes, 1 << 18) // 4)


def time_encoder_step(model: nn.Module, threads: int = 1, repeats: int = 5, inner: int = 10) -> float:
    """Microseconds of one steady-state streaming encoder step at batch 1 (``Encoder.infer`` on one
    chunk of ``chunk_size * subsampling`` fbank frames, from a state primed with the first chunk and
    its look-ahead), on ``threads`` threads; median as in :func:`time_call`."""
    enc = model.encoder
    g = torch.Generator().manual_seed(0)
    first = (enc.chunk_size + enc.lookahead) * enc.subsampling_factor
    feats = torch.randn(1, first + enc.frames_per_chunk, enc.subsampling.feat_dim, generator=g)
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.no_grad():
            _, state = model.infer(feats[:, :first], model.init_stream_state(1))
        chunk = feats[:, first:]
        return time_call(lambda x: model.infer(x, state), chunk, repeats, inner)
    finally:
        torch.set_num_threads(saved)
