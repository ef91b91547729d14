"""Loading a config from YAML or a mapping, and dumping it back exactly as validated."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from mlflow_xai.config.audit_config import AuditConfig
from mlflow_xai.config.messages import format_validation_error
from mlflow_xai.errors import ConfigError

# --------------------------------------------------------------------------------------------------
# Loading and error messages


def load_config(source: str | Path | Mapping[str, Any] | None = None, **overrides: Any) -> AuditConfig:
    """Build an ``AuditConfig`` from a YAML file, a mapping, or nothing (the defaults).

    ``overrides`` are merged over the source, nested mappings key by key.
    """
    if source is None:
        data: Any = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"config file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_yaml_problem(exc)}") from None
        if data is None:
            data = {}
    else:
        raise ConfigError(f"config must be a path to a YAML file or a mapping, got {type(source).__name__}")
    if not isinstance(data, Mapping):
        raise ConfigError(f"config must be a mapping of keys to values, got {type(data).__name__}")
    data = _deep_merge(data, overrides)
    try:
        return AuditConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint on one line, with where it is (1-based line and column)."""
    problem = getattr(exc, "problem", None) or str(exc)
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return " ".join(f"{problem}{where}".split())


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def dump_config(config: AuditConfig) -> str:
    """The config as YAML, exactly as validated (logged with every run)."""
    # Disabled methods and unset options are left out, so that the file loads back to this config.
    return yaml.safe_dump(config.model_dump(mode="json", exclude_none=True), sort_keys=False)


def shifted_seeds(config: AuditConfig, shift: int) -> AuditConfig:
    """``config`` with every seed in it (the audit's, each method's and each check's) moved by
    ``shift``, and one seed run: the same audit under other random draws."""

    def shift_all(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {
                key: (item + shift if key == "seed" and isinstance(item, int) else shift_all(item))
                for key, item in value.items()
            }
        if isinstance(value, list):
            return [shift_all(item) for item in value]
        return value

    data = shift_all(config.model_dump(mode="json", exclude_none=True))
    data["gate"]["seed_runs"] = 1
    return AuditConfig.model_validate(data)
