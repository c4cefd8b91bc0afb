"""What the supernet trainer and the pruning baseline share: masks, search space, dense init,
sub-network validation.

Both start from dense weights: a dense checkpoint (``sparsity.init_from``), or ``sparsity.dense_steps``
dense steps at the start of the same run (stage 1). Magnitude masks of random weights mean nothing. (The
dual-mode trainer, ``needs_dense_start = False``, may also start from scratch: its dense full path
trains every weight while its streaming sparsity ramps up from 0.)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from omnisparse.config import Config
from omnisparse.decoding.evaluate import evaluate_cuts
from omnisparse.sparsity.space import space_and_bank
from omnisparse.train.trainer import Trainer
from omnisparse.train.weights_init import init_model_from

log = logging.getLogger(__name__)


@contextlib.contextmanager
def dropout_disabled(model: nn.Module) -> Iterator[None]:
    """Temporarily set every dropout probability of ``model`` to 0 (``nn.Dropout`` modules and the
    attention-probability dropout), keeping ``model.training`` as is."""
    saved = []
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            saved.append((m, "p", m.p))
            m.p = 0.0
        elif hasattr(m, "dropout") and isinstance(getattr(m, "dropout"), float):
            saved.append((m, "dropout", m.dropout))
            m.dropout = 0.0
    try:
        yield
    finally:
        for m, attr, value in saved:
            setattr(m, attr, value)


class SparseTrainerBase(Trainer):
    """A :class:`Trainer` that owns a :class:`MaskBank` and a :class:`SearchSpace` for its model."""

    kind = "sparse"
    needs_dense_start = True  # refuse to start without sparsity.init_from or sparsity.dense_steps > 0
    _path_digest = ""  # sha256 over every step's sub-networks since this process started

    def __init__(self, cfg: Config, resume: bool = True):
        super().__init__(cfg, resume=resume)
        sc = cfg.sparsity
        self.space, self.bank = space_and_bank(self.model, sc)
        self.spec = self.space.spec
        if self.needs_dense_start and not sc.init_from and sc.dense_steps <= 0:
            raise ValueError("sparse training needs dense weights to start from: set sparsity.init_from to a dense "
                             "checkpoint or run directory, or sparsity.dense_steps > 0")
        if self.step == 0 and sc.init_from:
            self._load_init(sc.init_from)

    def record_step_paths(self, paths: object) -> None:
        """Fold this step's sub-networks (any JSON-able description) into a digest DDP ranks compare at the end."""
        text = json.dumps(paths, sort_keys=True)
        self._path_digest = hashlib.sha256((self._path_digest + text).encode()).hexdigest()

    def replicas_identical(self) -> bool:
        """Also checks (into ``cost['ddp_same_configs']``) that every rank trained the same sub-networks."""
        same_weights = super().replicas_identical()
        mine = torch.tensor([float(int(self._path_digest or "0", 16) % (1 << 48))], dtype=torch.float64)
        gathered = [torch.zeros_like(mine) for _ in range(self.dist.world_size)]
        dist.all_gather(gathered, mine.to(self.dist.device) if self.dist.device.type == "cuda" else mine)
        self.cost["ddp_same_configs"] = all(torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered)
        return same_weights

    @property
    def sparse_start(self) -> int:
        """Optimizer step at which sparse training begins (after the dense warm-up of this run)."""
        return 0 if self.cfg.sparsity.init_from else self.cfg.sparsity.dense_steps

    def _load_init(self, path: str) -> None:
        info = init_model_from(self.model, path, self.cfg.model, self.tokenizer, "sparsity.init_from")
        self.cost["init_from"] = info["path"]
        self.cost["init_cost"] = info["cost"]

    def checkpoint_state(self) -> dict:
        return {**super().checkpoint_state(), "kind": self.kind}

    # ---------------------------------------------------------------- validation
    def validation_configs(self) -> dict[str, dict[str, float]]:
        """Name -> sub-network config validated at every ``valid_every`` (the dense one is ``dense``)."""
        return {"dense": self.space.sample_max()}

    def validate(self) -> dict[str, float]:
        out = {}
        try:
            for name, config in self.validation_configs().items():
                self.bank.refresh()
                self.bank.apply(config)
                res = evaluate_cuts(self.model, self.dev_cuts, self.tokenizer, self.normalizer,
                                    mode=self.cfg.train.mode, decode=self.cfg.decode, device=self.dist.device,
                                    on_the_fly=self.cfg.data.on_the_fly_features)
                out["dev_wer" if name == "dense" else f"dev_wer_{name}"] = res["wer"]
        finally:
            self.restore_masks()
        return out

    def restore_masks(self) -> None:
        """Put back the masks training runs with between steps (none for the supernet)."""
        self.bank.clear()
