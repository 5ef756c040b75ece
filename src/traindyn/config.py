"""Load, merge, override and validate the experiment configuration against its one schema."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "FiguresConfig",
    "TrackingConfig",
    "config_hash",
    "load_config",
    "parse_override",
    "resolve",
    "schema",
]

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    """One or more configuration problems, each naming the key and what is allowed."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(
            "invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def schema() -> dict[str, Any]:
    """Return the JSON schema of the configuration (workflow/schemas/config.schema.yaml)."""
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _fill_defaults(node: dict[str, Any], sub: dict[str, Any]) -> None:
    # Defaults come only from the schema, so code never needs a fallback value.
    for key, prop in sub.get("properties", {}).items():
        if key not in node and "default" in prop:
            node[key] = copy.deepcopy(prop["default"])
        if isinstance(node.get(key), dict) and prop.get("type") == "object":
            _fill_defaults(node[key], prop)


def _coerce_strings(node: Any, sub: dict[str, Any]) -> Any:
    # `snakemake --config key='{a: 1}'` hands nested values over as strings ("1"): read a
    # string as YAML wherever the schema expects something else, before validating.
    types = sub.get("type")
    types = set(types) if isinstance(types, list) else {types} if types else set()
    if isinstance(node, str) and "string" not in types and "enum" not in sub and types:
        try:
            return yaml.safe_load(node)
        except yaml.YAMLError:
            return node
    if isinstance(node, str) and "enum" in sub and node not in sub["enum"]:
        try:
            parsed = yaml.safe_load(node)
        except yaml.YAMLError:
            return node
        return parsed if parsed in sub["enum"] else node
    if isinstance(node, dict):
        props = sub.get("properties", {})
        return {k: _coerce_strings(v, props.get(k, {})) for k, v in node.items()}
    if isinstance(node, list) and "items" in sub:
        return [_coerce_strings(v, sub["items"]) for v in node]
    return node


def _describe(error: jsonschema.ValidationError) -> str:
    key = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        return f"{key}: unknown key(s) {extra}; allowed keys are {allowed}"
    if error.validator == "enum":
        return f"{key}: {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "type":
        return f"{key}: {error.instance!r} has the wrong type; expected {error.validator_value}"
    desc = error.schema.get("description", "")
    return f"{key}: {error.message}" + (f" ({desc.strip()})" if desc else "")


def resolve(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill schema defaults into ``raw`` and validate it.

    Args:
        raw: The merged configuration as plain data (YAML files plus overrides).

    Returns:
        A new dict with every default filled in.

    Raises:
        ConfigError: Listing every problem at once (unknown keys, types, ranges).
    """
    sch = schema()
    cfg = _coerce_strings(copy.deepcopy(raw) if raw else {}, sch)
    _fill_defaults(cfg, sch)
    validator = jsonschema.Draft202012Validator(sch)
    errors = sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))
    problems = [_describe(e) for e in errors]
    # Cross-key checks read values as the schema types them: skip the sections that failed.
    failed = {str(e.absolute_path[0]) if e.absolute_path else "<top level>" for e in errors}
    if "<top level>" not in failed:
        problems += _cross_checks(cfg, failed)
    if problems:
        raise ConfigError(problems)
    return cfg


def _cross_checks(cfg: dict[str, Any], failed: set[str]) -> list[str]:
    problems = []
    data = cfg["data"]
    for name, key in (("cifar10", "cifar10_dir"), ("wikitext2", "wikitext2_dir")):
        if "data" not in failed and name in data["datasets"] and not data[key]:
            problems.append(
                f"data.datasets lists {name!r} but data.{key} is null: set it to the folder "
                "holding the dataset's standard files"
            )
    from .studies import cross_checks  # studies add their own checks on the grid

    problems += cross_checks(cfg, skip=failed)
    return problems


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(item: str) -> dict[str, Any]:
    """Turn ``a.b.c=value`` (value parsed as YAML) into ``{"a": {"b": {"c": value}}}``.

    Raises:
        ConfigError: If ``item`` has no ``=`` or an empty key.
    """
    key, sep, value = item.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError([f"override {item!r} is not of the form key.subkey=value"])
    node: dict[str, Any] = {}
    cursor = node
    parts = key.split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = yaml.safe_load(value)
    return node


def load_config(files: list[str | Path], overrides: list[str] = ()) -> Config:
    """Merge YAML ``files`` in order, apply ``key=value`` overrides, validate.

    Args:
        files: Config files; later ones override earlier ones key by key.
        overrides: Items like ``data.split_seed=1``.

    Returns:
        The validated, typed configuration.

    Raises:
        ConfigError: If a file is missing or not a mapping, or the result is invalid.
    """
    merged: dict[str, Any] = {}
    problems = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            problems.append(f"config file {str(path)!r} does not exist")
            continue
        content = yaml.safe_load(path.read_text()) or {}
        if not isinstance(content, dict):
            problems.append(f"config file {str(path)!r} must hold a mapping at the top level")
            continue
        merged = _deep_merge(merged, content)
    if problems:
        raise ConfigError(problems)
    for item in overrides:
        merged = _deep_merge(merged, parse_override(item))
    return Config.from_dict(resolve(merged))


def config_hash(cfg: dict[str, Any]) -> str:
    """Return a short stable hash of a resolved configuration (for names and tags)."""
    blob = json.dumps(cfg, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def _typed(cls: type, data: dict[str, Any]):
    return cls(**{f.name: data[f.name] for f in fields(cls)})


@dataclass(frozen=True)
class TrackingConfig:
    """``tracking``: the MLflow store every job logs to."""

    uri: str
    artifact_root: str
    experiment: str
    enabled: bool
    defer: list[str]


@dataclass(frozen=True)
class DataConfig:
    """``data``: which datasets are prepared, from where, and how they are split."""

    datasets: list[str]
    split_seed: int
    val_fraction: float
    test_fraction: float
    max_train: int | None
    fashion_mnist_dir: str
    cifar10_dir: str | None
    wikitext2_dir: str | None


@dataclass(frozen=True)
class FiguresConfig:
    """``figures``: formats and resolution of rendered figures."""

    formats: list[str]
    dpi: int


@dataclass(frozen=True)
class Config:
    """The whole validated configuration, one typed section per stage."""

    tracking: TrackingConfig
    data: DataConfig
    figures: FiguresConfig
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> Config:
        """Build from an already resolved (validated, defaults filled) dict."""
        return cls(
            tracking=_typed(TrackingConfig, cfg["tracking"]),
            data=_typed(DataConfig, cfg["data"]),
            figures=_typed(FiguresConfig, cfg["figures"]),
            raw=cfg,
        )

    @property
    def hash(self) -> str:
        """Short hash of the resolved configuration."""
        return config_hash(self.raw)
