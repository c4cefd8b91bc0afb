"""The soak of ``bench/faults.py`` (a mixin of its ``Bench``), class ``soak_kills``: one long training
of a real-sized preset, SIGKILLed again and again, against the same training uninterrupted.

The soaked run is ``omnisparse train --config PRESET`` (one thread, a checkpoint every
``ckpt_every`` steps) on an existing corpus; each launch is SIGKILLed a random delay after its first
new checkpoint (so every launch makes progress; delays drawn from the bench's seed) and started
again from the command line, ``kills`` times, then run to its end. The uninterrupted reference runs
at the same time in its own process (the other core). Every kill is one injected fault: identical
when the soaked run's final weights equal the reference's bitwise, lost otherwise. The reference's
peak resident memory (its whole process tree, sampled from ``/proc``) is recorded with the wall
times of both runs.
"""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from fault_outcomes import verdict
from omnisparse.utils.faults import child_env, new_checkpoint, omnisparse_cmd, soak_killed, weights_equal
from omnisparse.utils.proc_memory import PeakRssSampler


class SoakFaults:
    soak_summary: dict | None = None

    def soak(self, corpus: Path, preset: str, steps: int, kills: int, delay_s: tuple[float, float] = (20.0, 150.0),
             ckpt_every: int = 25) -> None:
        try:
            self._soak(corpus, preset, steps, kills, delay_s, ckpt_every)
        except Exception as e:  # noqa: BLE001 - counted, and the other classes' results are kept
            self.record_outcome("soak_kills", "soak", "crashed", f"{type(e).__name__}: {e}", 0.0,
                                isinstance(e, TimeoutError))  # soak_killed's: a launch outlived its timeout

    def _soak(self, corpus: Path, preset: str, steps: int, kills: int, delay_s: tuple[float, float],
              ckpt_every: int) -> None:
        ref, run = self.dir("soak-ref"), self.dir("soak")

        def cmd(out: Path) -> list[str]:
            return omnisparse_cmd("train", "--config", preset, f"--data.corpus_dir={corpus}", f"--train.out_dir={out}",
                                  "--train.threads=1", f"--train.max_steps={steps}", f"--train.ckpt_every={ckpt_every}",
                                  "--train.valid_every=0", "--train.max_wall_s=0", "--train.keep_last=2")

        delays = [self.rng.uniform(*delay_s) for _ in range(kills)]
        t0 = time.monotonic()
        log = open(self.work / "soak-ref.log", "wb")
        reference = subprocess.Popen(cmd(ref), stdout=log, stderr=subprocess.STDOUT, env=child_env(),
                                     start_new_session=True)
        ref_end: list[float] = []  # when the reference itself ended (it usually ends first)
        waiter = threading.Thread(target=lambda: (reference.wait(), ref_end.append(time.monotonic())), daemon=True)
        waiter.start()
        try:
            with PeakRssSampler(reference.pid, lambda: "train") as rss:
                killed, final = soak_killed(cmd(run), delays, ready=lambda: new_checkpoint(run),
                                            timeout_s=max(600.0, 10.0 * steps))
                ref_rc = reference.wait()
                waiter.join()
                ref_s = ref_end[0] - t0
        finally:
            if reference.poll() is None:
                reference.kill()
                reference.wait()
            log.close()
        name = f"ckpt-{steps:08d}/model.safetensors"
        behaved = ref_rc == 0 and final.returncode == 0
        outcome = verdict("recovered_identical", behaved, result=lambda: weights_equal(ref / name, run / name))
        same = outcome == "recovered_identical"
        why = "final weights bitwise equal to the uninterrupted run's" if same else \
            f"reference rc {ref_rc}, soaked rc {final.returncode}: {final.output[-200:]}"
        for i, k in enumerate(killed):
            self.record_outcome("soak_kills", f"launch {i + 1} killed {delays[i]:.0f} s after its first new checkpoint",
                                outcome, why, k.seconds)
        soaked_s = sum(k.seconds for k in killed) + final.seconds
        self.soak_summary = {"preset": preset, "steps": steps, "ckpt_every": ckpt_every, "kills": len(killed),
                             "kills_planned": kills, "identical": same, "reference_wall_s": round(ref_s, 1),
                             "soaked_wall_s": round(soaked_s, 1), "launches": len(killed) + 1,
                             "reference_peak_rss_mb": round(rss.peaks.get("train", 0) / 2**20, 1)}
