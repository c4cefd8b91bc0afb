"""Shared test dummies (like lhotse's ``testing``): small random models and batches that tests of every
layer build the same way. Not used by the library itself."""
