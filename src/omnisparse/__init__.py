"""omnisparse: one streaming RNN-T supernet, pruned to any size."""

__version__ = "0.1.0"
