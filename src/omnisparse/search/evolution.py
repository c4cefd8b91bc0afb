"""Evolutionary search of a WER-vs-size Pareto front (Once-for-All / AlphaNet / AttentiveNAS style).

:class:`EvolutionFinder` knows only three things: a search space (``sample_min``, ``sample_random``,
``mutate``, ``crossover``, ``encode`` and ``genes`` / ``grid``, e.g. :class:`~omnisparse.sparsity.space.SearchSpace`),
an evaluator ``config -> fitness`` (WER, a fraction, or any score; lower is better) and a cost ``config -> bytes`` (or any other
integer cost: ``cost_key`` names it, e.g. ``latency_us`` for the measured latency of
:mod:`omnisparse.search.latency`; the size range and bucket width are then in that unit; a cost of
``None`` marks a config as infeasible, e.g. over a constraint on another quantity, and it is never
drawn). The algorithm (AlphaNet's evolutionary search, Wang et al., ICML 2021):

1. initial parents: the sparsest config (every gene at the largest grid value, when its size is in the
   range), with ``seed_uniform`` every other uniform config (all genes at one grid value) in the range,
   with ``sensitivity`` the sensitivity-guided ladder (below), then random configs whose size lies in
   ``[size_min, size_max]`` (rejection sampling). Seeding the uniform ladder matters: a supernet is
   trained on whole-network sparsity levels, and with a few hundred evaluations random per-gene configs
   (some genes at 0.9) never reach the uniform ones;
2. each generation: evaluate every candidate not evaluated before (cache keyed by ``space.encode``),
   fold the results into a Pareto table bucketed by size (``bucket = bytes // bucket_bytes``; best WER
   per bucket, ties -> smaller size, then the earlier one), then draw the next population:
   ``mutations`` children (a random table member, each gene re-drawn with probability ``mutate_prob``
   to a *different* grid value) and ``crossovers`` children (two random table members, uniform
   crossover); a child outside the size range is redrawn (from new parents) up to ``max_tries`` times,
   then dropped (counted in ``cost["rejected_children"]``).

Per-gene sensitivity (``sensitivity``, :mod:`omnisparse.search.sensitivity`): before the first
generation each gene's cost of being pruned alone is measured (``genes + 1`` evaluations, reported as
``sensitivity`` in ``pareto.json``) and its ladder (least sensitive genes ``sensitivity_spread`` grid
steps above each level, most sensitive as far below) joins the initial parents.

The fitness is whatever the evaluator returns (``score_key`` names it in the records: ``wer`` by
default, e.g. ``loss_per_token``). Every random draw comes from one ``random.Random(seed)``. After each generation the state (next
population, history, RNG state, counters) is written atomically to ``OUT/state.json`` (checksummed,
the previous one kept as the fallback for a damaged file: :mod:`omnisparse.search.state`); a run
started again on the same directory resumes there and produces exactly the history of an
uninterrupted run (the evaluator must be deterministic). Raising ``generations`` and running again
continues a finished search as if it had been asked for more generations from the start.

Outputs in ``OUT/``: ``history.json`` (every evaluation: generation, config, bytes, wer, origin),
``pareto.json`` (``front``: the monotone front; ``table``: every bucket; ``cost``; ``settings``),
``search.csv`` (one row per generation) and ``state.json``. Sizes: bytes; ``*_mb`` = bytes / 1e6.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Hashable, Mapping, Optional, Protocol

from tqdm.auto import tqdm

from omnisparse.io.atomic import atomic_write_text
from omnisparse.search.sensitivity import gene_sensitivity, sensitivity_ladder
from omnisparse.search.state import _rng_from_json, _rng_to_json, load_saved_state, write_state_file

log = logging.getLogger(__name__)

Config = dict[str, float]
ORIGINS = ("sparsest", "uniform", "sensitivity", "random", "mutation", "crossover")
STATE_VERSION = 1


class Space(Protocol):
    """What the finder needs from a search space (satisfied by :class:`SearchSpace`)."""

    genes: tuple[str, ...]
    grid: tuple[float, ...]

    def sample_min(self, s_max: float) -> Config: ...
    def sample_random(self, rng: random.Random, s_max: float = 1.0) -> Config: ...
    def mutate(self, config: Mapping[str, float], rng: random.Random, prob: float, s_max: float = 1.0) -> Config: ...
    def crossover(self, a: Mapping[str, float], b: Mapping[str, float], rng: random.Random) -> Config: ...
    def encode(self, config: Mapping[str, float]) -> tuple[Hashable, ...]: ...


@dataclass(frozen=True)
class EvolutionSettings:
    """Knobs of the search. Sizes in bytes; ``mutate_prob`` per gene; see the module docstring."""

    size_min: int
    size_max: int
    bucket_bytes: int
    population: int = 512
    generations: int = 20
    mutations: int = 128
    crossovers: int = 128
    mutate_prob: float = 0.2
    max_tries: int = 100
    seed: int = 0
    seed_uniform: bool = True  # every in-range uniform config is an initial parent
    sensitivity: bool = False  # measure each gene's sensitivity and seed the sensitivity-guided ladder
    sensitivity_spread: int = 2  # grid steps the least / most sensitive genes move above / below a level

    def __post_init__(self) -> None:
        if self.size_min < 0 or self.size_max < self.size_min:
            raise ValueError(f"empty size range [{self.size_min}, {self.size_max}] bytes "
                             f"({self.size_min / 1e6:.6f} .. {self.size_max / 1e6:.6f} MB)")
        if self.bucket_bytes < 1:
            raise ValueError(f"bucket_bytes must be >= 1, got {self.bucket_bytes}")
        for name in ("population", "max_tries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("generations", "mutations", "crossovers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.mutate_prob <= 1.0:
            raise ValueError(f"mutate_prob must be in [0, 1], got {self.mutate_prob}")
        if self.sensitivity_spread < 0:
            raise ValueError(f"sensitivity_spread must be >= 0, got {self.sensitivity_spread}")

    def resumable_fields(self) -> dict[str, Any]:
        """Every setting a resumed search must share with the saved one (all but ``generations``)."""
        d = asdict(self)
        d.pop("generations")
        if not self.sensitivity:  # only then: states saved before sensitivity existed still resume
            d.pop("sensitivity")
            d.pop("sensitivity_spread")
        return d



def _sort_wer(wer: float) -> float:
    """WER for comparisons: NaN (no scorable words) ranks worst."""
    return math.inf if math.isnan(wer) else wer


class EvolutionFinder:
    """Evolutionary search of sub-network configs minimising WER per size bucket.

    ``space``: see :class:`Space`; ``evaluator``: config -> fitness (WER or another score named by ``score_key``; lower is better; must be
    deterministic for exact resumption); ``cost``: config -> size in bytes (or, with ``cost_key`` other
    than ``"bytes"``, another integer cost such as ``latency_us``; ``None`` = infeasible);
    ``nonzero_params``: optional config -> parameter count, reported in ``pareto.json``; ``describe``:
    optional config -> extra JSON fields of a reported row (e.g. the size when the cost is latency);
    ``fingerprint``: JSON-safe facts about the evaluator/cost (model, data, format) that a resumed search
    must share with the saved one. Rows carry ``size_bytes`` / ``size_mb`` for ``cost_key="bytes"``,
    else ``<cost_key>`` (and ``<name>_ms`` for a ``<name>_us`` key); history records store the cost under
    ``cost_key``.
    """

    def __init__(self, space: Space, evaluator: Callable[[Config], float], cost: Callable[[Config], int],
                 settings: EvolutionSettings, nonzero_params: Optional[Callable[[Config], int]] = None,
                 fingerprint: Optional[Mapping[str, Any]] = None, progress: bool = True,
                 tensorboard: bool = False, cost_key: str = "bytes",
                 describe: Optional[Callable[[Config], Mapping[str, Any]]] = None, score_key: str = "wer"):
        self.space = space
        self.cost_key = cost_key
        self.score_key = score_key
        self.describe = describe
        self.evaluator = evaluator
        self.cost_fn = cost
        self.settings = settings
        self.nonzero_params = nonzero_params
        self.fingerprint = dict(fingerprint or {})
        self.progress = progress
        self.tensorboard = tensorboard
        self._reset()

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.rng = random.Random(self.settings.seed)
        self.generation = 0  # generations done
        self.population: list[dict[str, Any]] = []  # [{config, origin}] to evaluate next
        self.history: list[dict[str, Any]] = []
        self.cache: dict[tuple, int] = {}  # encoded config -> index in history
        self._sizes: dict[tuple, Optional[int]] = {}  # encoded config -> cost (memo of the cost function)
        self.table: dict[int, int] = {}  # size bucket -> index in history
        self.log_rows: list[dict[str, Any]] = []
        self.sensitivity: dict[str, float] = {}  # gene -> fitness(gene alone at the largest grid value) - reference
        self.cost = {"evaluated": 0, "generations": 0, "wall_s": 0.0, "rejected_children": 0,
                     "duplicates_skipped": 0, "evaluator_s": 0.0}

    def _settings_json(self) -> dict[str, Any]:
        out = {**self.settings.resumable_fields(), "genes": list(self.space.genes), "grid": list(self.space.grid),
               "fingerprint": self.fingerprint}
        if self.cost_key != "bytes":  # only then: states saved before cost keys existed still resume
            out["cost_key"] = self.cost_key
        if self.score_key != "wer":
            out["score_key"] = self.score_key
        return out

    def state_dict(self) -> dict[str, Any]:
        """JSON-safe state after :attr:`generation` generations (the Pareto table and cache are rebuilt
        from the history)."""
        return {"version": STATE_VERSION, "settings": self._settings_json(), "generation": self.generation,
                "population": self.population, "history": self.history, "rng": _rng_to_json(self.rng.getstate()),
                "log": self.log_rows, "cost": self.cost, "sensitivity": self.sensitivity}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`; ValueError if it was saved with other settings."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"search state version {state.get('version')} != {STATE_VERSION}")
        saved, mine = state["settings"], json.loads(json.dumps(self._settings_json()))
        diff = {k: (saved.get(k), mine.get(k)) for k in {**saved, **mine} if saved.get(k) != mine.get(k)}
        if diff:
            desc = "; ".join(f"{k}: saved {str(a)[:120]}, requested {str(b)[:120]}" for k, (a, b) in diff.items())
            raise ValueError(f"the output directory holds a search with other settings ({desc}); use another "
                             "out_dir or delete its state.json")
        self._reset()
        self.generation = int(state["generation"])
        self.population = [dict(p) for p in state["population"]]
        self.rng.setstate(_rng_from_json(state["rng"]))
        self.log_rows = [dict(r) for r in state["log"]]
        self.cost.update(state["cost"])
        self.sensitivity = dict(state.get("sensitivity", {}))
        for rec in state["history"]:
            self._record(dict(rec))

    # ------------------------------------------------------------------ algorithm
    def size_of(self, config: Config) -> Optional[int]:
        """``cost(config)`` (bytes, or the unit of ``cost_key``; None = infeasible), memoised by the
        encoded config."""
        key = tuple(self.space.encode(config))
        if key not in self._sizes:
            c = self.cost_fn(config)
            self._sizes[key] = None if c is None else int(c)
        return self._sizes[key]

    def _in_range(self, size: Optional[int]) -> bool:
        return size is not None and self.settings.size_min <= size <= self.settings.size_max

    def _record(self, rec: dict[str, Any]) -> None:
        """Append an evaluation to the history, the cache and the Pareto table."""
        idx = len(self.history)
        self.history.append(rec)
        self.cache[tuple(self.space.encode(rec["config"]))] = idx
        ck = self.cost_key
        bucket = rec[ck] // self.settings.bucket_bytes
        cur = self.table.get(bucket)
        sk = self.score_key
        if cur is None or (_sort_wer(rec[sk]), rec[ck]) < (_sort_wer(self.history[cur][sk]), self.history[cur][ck]):
            self.table[bucket] = idx

    def _members(self) -> list[Config]:
        """Configs of the Pareto table, in bucket order (parents of the next population)."""
        return [self.history[self.table[b]]["config"] for b in sorted(self.table)]

    def _draw(self, make: Callable[[], Config]) -> Optional[Config]:
        """A config from ``make()`` inside the size range, or None after ``max_tries`` draws."""
        for _ in range(self.settings.max_tries):
            config = make()
            if self._in_range(self.size_of(config)):
                return config
        return None

    def initial_population(self) -> list[dict[str, Any]]:
        """The sparsest config (when in range), the other in-range uniform configs (``seed_uniform``), then
        random in-range configs: ``population`` in all (at least the seeded ones)."""
        st = self.settings
        out: list[dict[str, Any]] = []
        sparsest = self.space.sample_min(1.0)
        if self._in_range(self.size_of(sparsest)):
            out.append({"config": sparsest, "origin": "sparsest"})
        else:
            log.info("the sparsest config (%s) is outside the size range; not a parent", self.size_of(sparsest))
        if st.seed_uniform:
            seen = {tuple(self.space.encode(sparsest))}
            for s in sorted(self.space.grid, reverse=True):
                config = {g: s for g in self.space.genes}
                key = tuple(self.space.encode(config))
                if key not in seen and self._in_range(self.size_of(config)):
                    seen.add(key)
                    out.append({"config": config, "origin": "uniform"})
        if st.sensitivity:
            seen = {tuple(self.space.encode(c["config"])) for c in out}
            for config in self.sensitivity_ladder():
                key = tuple(self.space.encode(config))
                if key not in seen and self._in_range(self.size_of(config)):
                    seen.add(key)
                    out.append({"config": config, "origin": "sensitivity"})
        while len(out) < st.population:
            config = self._draw(lambda: self.space.sample_random(self.rng))
            if config is None:
                dense = {g: 0.0 for g in self.space.genes}
                raise ValueError(
                    f"no random config inside the size range [{st.size_min}, {st.size_max}] bytes "
                    f"({st.size_min / 1e6:.6f} .. {st.size_max / 1e6:.6f} MB) after {st.max_tries} draws; the "
                    f"sparsest config is {self.size_of(sparsest)} bytes and the dense one {self.size_of(dense)} "
                    f"bytes: widen the range (or raise max_tries)")
            out.append({"config": config, "origin": "random"})
        return out

    def measure_sensitivity(self) -> dict[str, float]:
        """Each gene's sensitivity (:func:`~omnisparse.search.sensitivity.gene_sensitivity`), measured
        once and kept in the state."""
        if not self.sensitivity:
            t0 = time.perf_counter()
            self.sensitivity = gene_sensitivity(
                self.space.genes, self.space.grid, self.evaluator,
                progress=lambda genes: tqdm(genes, desc="sensitivity", disable=not self.progress))
            self.cost["evaluator_s"] += time.perf_counter() - t0
            self.cost["sensitivity_evaluations"] = len(self.space.genes) + 1
        return self.sensitivity

    def sensitivity_ladder(self) -> list[Config]:
        """The sensitivity-guided ladder, sparsest first (:func:`~omnisparse.search.sensitivity.sensitivity_ladder`)."""
        return sensitivity_ladder(self.space.genes, self.space.grid, self.measure_sensitivity(),
                                  self.settings.sensitivity_spread)

    def next_population(self) -> list[dict[str, Any]]:
        """``mutations`` + ``crossovers`` in-range children of the Pareto table's members."""
        st = self.settings
        members = self._members()
        out: list[dict[str, Any]] = []

        def mutant() -> Config:
            return self.space.mutate(self.rng.choice(members), self.rng, st.mutate_prob)

        def cross() -> Config:
            a = self.rng.choice(members)
            b = self.rng.choice(members)
            return self.space.crossover(a, b, self.rng)

        plan = [("mutation", mutant)] * st.mutations + [("crossover", cross)] * st.crossovers
        for origin, make in plan:
            child = self._draw(make)
            if child is None:
                self.cost["rejected_children"] += 1
            else:
                out.append({"config": child, "origin": origin})
        if self.cost["rejected_children"]:
            log.debug("%d children dropped so far (outside the size range after max_tries draws)",
                      self.cost["rejected_children"])
        return out

    def evaluate_population(self) -> int:
        """Evaluate the current population's unseen configs (in order); returns how many were new."""
        new = 0
        for cand in self.population:
            config = cand["config"]
            if tuple(self.space.encode(config)) in self.cache:
                self.cost["duplicates_skipped"] += 1
                continue
            size = self.size_of(config)
            t0 = time.perf_counter()
            wer = float(self.evaluator(config))
            self.cost["evaluator_s"] += time.perf_counter() - t0
            self._record({"generation": self.generation, "config": dict(config), self.cost_key: size,
                          self.score_key: wer, "origin": cand["origin"]})
            new += 1
        self.cost["evaluated"] = len(self.history)
        return new

    # ------------------------------------------------------------------ results
    def row_of(self, idx: int) -> dict[str, Any]:
        """The report row of ``history[idx]`` (cost fields, ``nonzero_params``, ``describe``'s, score, config)."""
        rec = self.history[idx]
        ck = self.cost_key
        if ck == "bytes":
            row = {"size_bytes": rec[ck], "size_mb": rec[ck] / 1e6}
        else:
            row = {ck: rec[ck]}
            if ck.endswith("_us"):
                row[ck[:-3] + "_ms"] = rec[ck] / 1000.0
        if self.nonzero_params is not None:
            row["nonzero_params"] = int(self.nonzero_params(rec["config"]))
        if self.describe is not None:
            row.update({k: v for k, v in self.describe(rec["config"]).items() if k not in row})
        row.update({self.score_key: rec[self.score_key]}, generation=rec["generation"], origin=rec["origin"],
                   config=rec["config"])
        return row

    def table_rows(self) -> list[dict[str, Any]]:
        """Every bucket's best config, by size."""
        return [self.row_of(self.table[b]) for b in sorted(self.table)]

    def front(self) -> list[dict[str, Any]]:
        """The monotone Pareto front, by size: buckets whose WER is strictly below that of every
        smaller bucket, so WER strictly decreases as size grows."""
        out, best = [], math.inf
        for b in sorted(self.table):
            wer = _sort_wer(self.history[self.table[b]][self.score_key])
            if wer < best:
                best = wer
                out.append(self.row_of(self.table[b]))
        return out

    def _log_generation(self, new: int) -> dict[str, Any]:
        front = self.front()
        sk = self.score_key
        row = {"generation": self.generation, "new_evaluations": new, "evaluated": len(self.history),
               "table_buckets": len(self.table), "pareto_points": len(front),
               f"best_{sk}": min((r[sk] for r in front), default=math.nan),
               "smallest_mb": front[0].get("size_mb", math.nan) if front else math.nan,
               f"{sk}_at_smallest": front[0][sk] if front else math.nan,
               "rejected_children": self.cost["rejected_children"], "wall_s": round(self.cost["wall_s"], 3)}
        self.log_rows.append(row)
        return row

    def _write(self, out: Path) -> None:
        write_state_file(out, self.state_dict())
        atomic_write_text(out / "history.json", json.dumps(self.history, indent=1) + "\n")
        settings = {**self._settings_json(), "generations": self.settings.generations}
        atomic_write_text(out / "pareto.json", json.dumps({"front": self.front(), "table": self.table_rows(),
                                                           "cost": self.cost, "settings": settings,
                                                           "score_key": self.score_key,
                                                           "sensitivity": self.sensitivity}, indent=1) + "\n")
        buf = io.StringIO()
        if self.log_rows:
            w = csv.DictWriter(buf, fieldnames=list(self.log_rows[0]))
            w.writeheader()
            w.writerows(self.log_rows)
        atomic_write_text(out / "search.csv", buf.getvalue())

    def run(self, out_dir: str | Path | None = None, resume: bool = True) -> dict[str, Any]:
        """Run (or resume, from ``out_dir/state.json``) the search; returns ``{front, table, history,
        cost}``. ``cost``: ``evaluated`` (candidates evaluated), ``generations`` (done), ``wall_s``
        (seconds, accumulated across resumes), ``evaluator_s``, ``rejected_children``,
        ``duplicates_skipped``. Without ``out_dir`` nothing is written (and nothing resumed)."""
        out = Path(out_dir) if out_dir is not None else None
        saved = load_saved_state(out) if out is not None and resume else None
        if saved is not None:
            self.load_state_dict(saved)
            log.info("resuming the search in %s after %d generation(s)", out, self.generation)
        else:
            self._reset()
            self.population = self.initial_population()
        st = self.settings
        wall_before, t0 = self.cost["wall_s"], time.time()
        tb = None
        if self.tensorboard and out is not None:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(out / "tb"))
        bar = tqdm(total=st.generations, initial=min(self.generation, st.generations), desc="search",
                   disable=not self.progress, unit="gen")
        try:
            while self.generation < st.generations:
                new = self.evaluate_population()
                self.population = self.next_population()
                self.cost["wall_s"] = wall_before + time.time() - t0
                row = self._log_generation(new)
                self.generation += 1
                self.cost["generations"] = self.generation
                if out is not None:
                    self._write(out)
                if tb is not None:
                    for k, v in row.items():
                        if k != "generation":
                            tb.add_scalar(f"search/{k}", v, row["generation"])
                bar.update(1)
                bar.set_postfix(best=f"{row[f'best_{self.score_key}']:.4f}", pareto=row["pareto_points"],
                                evaluated=row["evaluated"])
        finally:
            bar.close()
            if tb is not None:
                tb.close()
        self.cost["wall_s"] = wall_before + time.time() - t0
        if out is not None:
            self._write(out)
        return {"front": self.front(), "table": self.table_rows(), "history": self.history, "cost": dict(self.cost)}
