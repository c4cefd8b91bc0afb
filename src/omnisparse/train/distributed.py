"""The process group of a training run: one process, or one rank of several started by ``torchrun``
(``WORLD_SIZE`` / ``LOCAL_RANK``; gloo on CPU, nccl on GPU), and the check that every rank runs the
same thing (:func:`check_ranks_agree`)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

import torch
import torch.distributed as dist

from omnisparse.config import Config
from omnisparse.data.layout import CorpusLayout
from omnisparse.errors import RankMismatchError
from omnisparse.io.atomic import sha256
from omnisparse.io.json_file import content_digest


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
            _init_process_group("nccl" if use_cuda else "gloo")
        rank = dist.get_rank()
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            return Dist(world, rank, torch.device("cuda", local))
        return Dist(world, rank, torch.device("cpu"))
    return Dist(1, 0, torch.device("cuda" if use_cuda else "cpu"))


def _init_process_group(backend: str) -> None:
    """``init_process_group`` from the environment ``torchrun`` (or a hand launch) sets. Under
    ``torchrun`` the workers' store is the launcher's, which outlives a restart of the workers
    (``--max-restarts``) with the keys of the attempt before: the addresses of dead ranks, which
    restarted ranks could read before their peers overwrote them (gloo's "connection refused", or a
    hang). Each attempt (``TORCHELASTIC_RESTART_COUNT``) therefore gets keys of its own."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        dist.init_process_group(backend=backend)
        return
    store, rank, world = next(dist.rendezvous("env://"))
    dist.init_process_group(backend=backend, store=dist.PrefixStore(f"omnisparse/attempt-{attempt}", store),
                            rank=rank, world_size=world)


def code_digest() -> str:
    """sha256 over the omnisparse package's Python sources (relative path and sha256 of each): the code
    a rank runs, whatever its version string says."""
    root = Path(__file__).resolve().parents[1]  # the omnisparse package
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(f"{p.relative_to(root)}\0{sha256(p)}\0".encode())
    return h.hexdigest()


def files_digest(paths: list[Path]) -> str:
    """sha256 over the names and sha256 of ``paths`` (a missing file counts as its absence)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.name}\0{sha256(p) if p.is_file() else '<missing>'}\0".encode())
    return h.hexdigest()


def rank_facts(cfg: Config) -> dict[str, str]:
    """What every rank of a training must share, as digests: the config (but for where the corpus is
    mounted, which may differ between nodes), the corpus manifests it trains and validates on, and the
    omnisparse code (:func:`check_ranks_agree`)."""
    layout = CorpusLayout(cfg.data.corpus_dir)
    manifests = [layout.cuts(s) for s in (*cfg.data.train_splits, cfg.data.dev_split)]
    settings = cfg.to_dict()
    settings["data"] = {k: v for k, v in settings["data"].items() if k != "corpus_dir"}
    return {"config": content_digest(settings), "corpus": files_digest(manifests), "code": code_digest()}


def check_ranks_agree(d: Dist, facts: Callable[[], Mapping[str, str]]) -> None:
    """Compare ``facts()`` (``{what: hex sha256}``, the same keys on every rank, e.g. :func:`rank_facts`)
    of every rank with rank 0's; :class:`RankMismatchError` on every rank, one line naming each rank
    and fact that differ. A single process has nothing to compare with and computes no facts. The
    digests travel as a uint8 tensor through ``all_gather`` (no pickled objects between ranks)."""
    if d.world_size == 1:
        return
    mine_facts = facts()
    names = sorted(mine_facts)
    mine = torch.tensor([list(bytes.fromhex(mine_facts[k])) for k in names], dtype=torch.uint8)
    if d.device.type == "cuda":
        mine = mine.to(d.device)
    gathered = [torch.empty_like(mine) for _ in range(d.world_size)]
    dist.all_gather(gathered, mine)
    every = [t.cpu() for t in gathered]
    differ = [f"rank {r}: {', '.join(k for i, k in enumerate(names) if not torch.equal(t[i], every[0][i]))}"
              for r, t in enumerate(every) if not torch.equal(t, every[0])]
    if differ:
        raise RankMismatchError(f"the ranks of this run disagree with rank 0 ({'; '.join(differ)} differ): every "
                                "rank must run the same omnisparse code with the same config and corpus")


def run_under_torchrun(command: str, args: list[str], nproc: int) -> None:
    """``omnisparse <command> <args>`` as ``nproc`` ranks of a ``torchrun --standalone`` launch, one
    intra-op thread each (unless ``args`` set ``--train.threads``); CalledProcessError when it fails."""
    if not any(a.startswith("--train.threads") for a in args):
        args = [*args, "--train.threads=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "omnisparse.cli", command, *args]
    print("launching:", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
