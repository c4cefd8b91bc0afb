"""Reading a configuration: YAML presets (``omnisparse/conf/``, ``include`` chains), ``--section.key=value``
overrides parsed as YAML scalars, every value coerced to its field's type, and a run's saved
``config.json`` read back."""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from omnisparse.config.rules import ConfigError, check_section_ranges
from omnisparse.config.schema import Config, ModelConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"  # inside the package: presets work from any install


def _coerce(value: Any, typ: Any, where: str) -> Any:
    origin = get_origin(typ)
    if origin is list:
        (inner,) = get_args(typ)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, inner, where) for v in value]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not math.isfinite(value)) or int(value) != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if typ is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            value = float(value)
        except OverflowError:  # an integer beyond float range
            raise ConfigError(f"{where}: expected a finite number, got {value!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return value
    if origin is Literal:
        choices = get_args(typ)
        if value not in choices:
            raise ConfigError(f"{where}: must be one of {' | '.join(repr(c) for c in choices)}, got {value!r}")
        return value
    if typ is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def update_dataclass(obj: Any, values: dict[str, Any], where: str) -> None:
    """Set ``obj``'s fields from ``values`` (nested dicts into nested sections), each coerced to its
    field's type; an unknown key or a wrong type is a ConfigError naming ``where + key``."""
    hints = get_type_hints(type(obj))
    names = {f.name for f in fields(obj)}
    for key, value in values.items():
        if key not in names:
            raise ConfigError(f"unknown key {where}{key!r}; known: {sorted(names)}")
        current = getattr(obj, key)
        if is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{key}: expected a mapping")
            update_dataclass(current, value, f"{where}{key}.")
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{where}{key}"))


def resolve_preset(name_or_path: str | Path) -> Path:
    """``small`` -> the package preset ``omnisparse/conf/small.yaml``; a path is returned as is (must exist)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise ConfigError(f"config file not found: {p}")
        return p
    cand = CONF_DIR / f"{name_or_path}.yaml"
    if not cand.exists():
        known = sorted(q.stem for q in CONF_DIR.glob("*.yaml"))
        raise ConfigError(f"no preset {name_or_path!r}; known presets: {known}")
    return cand


def parse_override(text: str) -> tuple[list[str], Any]:
    """``--train.lr=1e-3`` -> (["train", "lr"], 0.001)."""
    body = text[2:] if text.startswith("--") else text
    if "=" not in body:
        raise ConfigError(f"override must look like --section.key=value, got {text!r}")
    key, raw = body.split("=", 1)
    parts = key.replace("-", "_").split(".")
    if len(parts) < 2:
        raise ConfigError(f"override key needs a section, e.g. --train.lr=1e-3 (got {text!r})")
    if raw == "":
        return parts, ""
    try:
        return parts, yaml.safe_load(raw)
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"override {text[:80]!r}: the value is not valid YAML ({_first_line(e)})") from None


def _first_line(e: BaseException) -> str:
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if problem and mark is not None:  # a YAML syntax error: what and where
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _read_preset(preset: str | Path, seen: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The preset's sections, preceded by those of its ``base:`` chain (a preset name or path)."""
    path = resolve_preset(preset).resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular `base:` chain")
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"{preset}: cannot read the config file ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{preset}: not a YAML config (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except (yaml.YAMLError, RecursionError) as e:
        raise ConfigError(f"{preset}: not valid YAML ({_first_line(e)})") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{preset}: top level must be a mapping of sections")
    base = data.pop("base", None)
    if base is not None and not isinstance(base, str):
        raise ConfigError(f"{preset}: `base:` must name a preset or a YAML file, got {base!r}")
    return (_read_preset(base, (*seen, path)) if base else []) + [data]


def load_config(preset: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults <- the preset's ``base:`` chain <- the preset <- ``--section.key=value`` overrides."""
    cfg = Config()
    if preset is not None:
        for data in _read_preset(preset):
            try:
                update_dataclass(cfg, data, "")
            except ConfigError as e:
                raise ConfigError(f"{preset}: {e}") from None
    apply_overrides(cfg, overrides or [])
    return cfg.validate()


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Apply ``--section.key=value`` strings to ``cfg`` in place (and return it)."""
    for ov in overrides:
        parts, value = parse_override(ov)
        nested: dict[str, Any] = {parts[-1]: value}
        for p in reversed(parts[:-1]):
            nested = {p: nested}
        update_dataclass(cfg, nested, "")
    return cfg


def config_from_dict(data: dict[str, Any]) -> Config:
    cfg = Config()
    update_dataclass(cfg, data, "")
    return cfg.validate()


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    m = ModelConfig()
    update_dataclass(m, data, "model.")
    check_section_ranges("model", m)
    return m
