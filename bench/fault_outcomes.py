"""The outcomes the fault bench counts per case, and the rule that turns a case's checks into one.

A case checks two things: whether the process *behaved* (exited with the status it should, with one
``omnisparse: error:`` line where it had to stop, no traceback, no signal death, no hang) and whether
what it left is *kept* (weights, tables, corpus bytes and untouched files as they must be, nothing
half-written, nothing written outside the output directory).
"""

from __future__ import annotations

from collections.abc import Callable

OUTCOMES = ("recovered_identical", "recovered_as_designed", "failed_cleanly", "lost", "crashed")
DESCRIPTIONS = {
    "recovered_identical": "same result as the uninterrupted run (weights bitwise, Pareto table, corpus bytes)",
    "recovered_as_designed": "handled, the work went on; the result differs by design (batch skipped or split, "
                             "utterance skipped/fixed and counted, odd audio transcribed)",
    "failed_cleanly": "one 'omnisparse: error:' line (runs: exit 1, last checkpoint resumes to the uninterrupted result)",
    "lost": "a result, checkpoint or file that is not what it must be: wrong weights or table, damaged or missing "
            "data, a half-written file, a write outside the output directory (target 0)",
    "crashed": "the process misbehaved with its data intact: a traceback or unexpected exception, a signal death, "
               "a hang, a wrong exit status, a missing or unclear error line (target 0)",
}


def verdict(expected: str, behaved: bool = True, kept: bool = True,
            result: Callable[[], bool] | None = None) -> str:
    """One case's outcome from its checks.

    ``kept`` is judged whatever the process did (input untouched, nothing half-written, nothing
    written outside); ``result`` (the weights, table or counts the process produced) only when it
    behaved, since a process that failed has no result to compare. Data not kept or a wrong result
    -> ``lost``; bad behaviour with the data kept -> ``crashed``; otherwise ``expected``.
    """
    if expected not in OUTCOMES[:3]:
        raise ValueError(f"not a good outcome: {expected!r}")
    if not kept:
        return "lost"
    if not behaved:
        return "crashed"
    return expected if result is None or result() else "lost"
