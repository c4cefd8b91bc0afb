"""saved_figure: writes the PNG when the block ends, nothing when it raises, and never leaks a figure."""

import matplotlib.pyplot as plt
import pytest

from omnisparse.utils.plotting import saved_figure


def test_writes_and_closes(tmp_path):
    before = len(plt.get_fignums())
    with saved_figure(tmp_path / "a.png", 1, 2, figsize=(4, 2)) as (fig, axes):
        axes[0].plot([0, 1], [1, 0])
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(plt.get_fignums()) == before


def test_a_failing_block_writes_nothing(tmp_path):
    before = len(plt.get_fignums())
    with pytest.raises(ZeroDivisionError):
        with saved_figure(tmp_path / "b.png") as (fig, ax):
            ax.plot([1 / 0])
    assert not (tmp_path / "b.png").exists() and len(plt.get_fignums()) == before
