"""The process group of a training run: one process, or one rank of several started by ``torchrun``
(``WORLD_SIZE`` / ``LOCAL_RANK``; gloo on CPU, nccl on GPU)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass
class Dist:
    world_size: int = 1
    rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_rank() -> int:
    """This process's global rank as ``torchrun`` set it (``RANK``; 0 for a single process), known
    before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def setup_distributed(device_pref: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        rank = dist.get_rank()
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return Dist(world, rank, torch.device("cuda", local))
        return Dist(world, rank, torch.device("cpu"))
    return Dist(1, 0, torch.device("cuda" if use_cuda else "cpu"))


def run_under_torchrun(command: str, args: list[str], nproc: int) -> None:
    """``omnisparse <command> <args>`` as ``nproc`` ranks of a ``torchrun --standalone`` launch, one
    intra-op thread each (unless ``args`` set ``--train.threads``); CalledProcessError when it fails."""
    if not any(a.startswith("--train.threads") for a in args):
        args = [*args, "--train.threads=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "omnisparse.cli", command, *args]
    print("launching:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
