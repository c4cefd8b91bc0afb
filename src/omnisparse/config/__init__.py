"""Typed configuration: dataclasses, YAML presets in ``omnisparse/conf/`` and ``--section.key=value`` overrides.

A run's configuration is one :class:`Config` with one section per concept. Presets are YAML files
holding any subset of the sections; every key must name a real field (a typo is an error, not a
silently ignored default). Overrides use dotted paths::

    omnisparse train --config small --train.lr=2e-3 --model.n_layers=8

Values of overrides are parsed as YAML scalars/lists (``--data.train_splits=[train,extra]``).
"""

from __future__ import annotations

from omnisparse.config.loading import (
    CONF_DIR,
    apply_overrides,
    config_from_dict,
    load_config,
    model_config_from_dict,
    parse_override,
    resolve_preset,
    update_dataclass,
)
from omnisparse.config.rules import RANGES, ConfigError, check_ranges, check_section_ranges
from omnisparse.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    DecodeConfig,
    DualModeConfig,
    LMConfig,
    ModelConfig,
    PretrainConfig,
    SearchConfig,
    SparsityConfig,
    TrainConfig,
)

__all__ = [
    "CONF_DIR", "RANGES", "AugmentConfig", "Config", "ConfigError", "DataConfig", "DecodeConfig", "DualModeConfig",
    "LMConfig", "ModelConfig", "PretrainConfig", "SearchConfig", "SparsityConfig", "TrainConfig", "apply_overrides",
    "check_ranges", "check_section_ranges", "config_from_dict", "load_config", "model_config_from_dict",
    "parse_override", "resolve_preset", "update_dataclass",
]
