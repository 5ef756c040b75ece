"""Load, merge, override and validate the experiment configuration against its one schema."""

from __future__ import annotations

import copy
import functools
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
    return copy.deepcopy(_schema(SCHEMA_PATH.stat().st_mtime_ns))


@functools.lru_cache(maxsize=2)
def _schema(mtime_ns: int) -> dict[str, Any]:
    # Parsed once per version of the file: resolve() runs for every job and every override.
    return yaml.load(SCHEMA_PATH.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


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
        extra = sorted(map(str, set(error.instance) - set(allowed)))  # YAML keys may be numbers
        return f"{key}: unknown key(s) {extra}; allowed keys are {allowed}"
    if error.validator == "enum":
        return f"{key}: {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "type":
        if isinstance(error.instance, str):  # a --config value or override that YAML could not read
            try:
                yaml.safe_load(error.instance)
            except yaml.YAMLError as err:
                return (f"{key}: {error.instance!r} is not valid YAML ({_yaml_where(err)}); "
                        f"expected {error.validator_value}")  # fmt: skip
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
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError([f"<top level>: the configuration must be a mapping (key: value), not {raw!r}"])
    sch = _schema(SCHEMA_PATH.stat().st_mtime_ns)  # read only, never modified
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

    try:
        problems += cross_checks(cfg, skip=failed)
    except (TypeError, KeyError, AttributeError, IndexError, ValueError):
        # A study's checks may read another section that failed the schema; those problems
        # are already reported, and a check on a config that passed must never fail so.
        if not failed:
            raise
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
    key = key.strip()
    if not sep or not key or any(not part.strip() for part in key.split(".")):
        raise ConfigError([f"override {item!r} is not of the form key.subkey=value"])
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as err:
        raise ConfigError([f"override {item!r}: the value of {key} is not valid YAML ({_yaml_where(err)})"]) from None
    node: dict[str, Any] = {}
    cursor = node
    parts = [part.strip() for part in key.split(".")]
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = parsed
    return node


def _yaml_where(err: yaml.YAMLError) -> str:
    # PyYAML's marks are 0-based; editors count lines and columns from 1.
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _read_file(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.is_file():
        return None, f"config file {str(path)!r} does not exist (or is not a file)"
    try:
        # libyaml's loader when present: 10x faster, and every job reads the resolved config.
        content = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as err:
        return None, f"config file {str(path)!r} is not valid YAML: {_yaml_where(err)}"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"config file {str(path)!r} cannot be read: {err}"
    if content is None:
        return {}, None
    if not isinstance(content, dict):
        return None, (f"config file {str(path)!r} must hold a mapping (key: value) at the top "
                      f"level, not a {type(content).__name__}")  # fmt: skip
    return content, None


def load_config(files: list[str | Path], overrides: list[str] = ()) -> Config:
    """Merge YAML ``files`` in order, apply ``key=value`` overrides, validate.

    Args:
        files: Config files; later ones override earlier ones key by key.
        overrides: Items like ``data.split_seed=1``.

    Returns:
        The validated, typed configuration.

    Raises:
        ConfigError: Listing every problem at once: files that are missing, not YAML (with
            the line) or not a mapping, malformed overrides, and what the merged
            configuration breaks.
    """
    merged: dict[str, Any] = {}
    problems = []
    for f in files:
        content, problem = _read_file(Path(f))
        if problem:
            problems.append(problem)
        else:
            merged = _deep_merge(merged, content)
    for item in overrides:
        try:
            merged = _deep_merge(merged, parse_override(item))
        except ConfigError as err:
            problems += err.problems
    try:
        cfg = resolve(merged)
    except ConfigError as err:
        problems += err.problems
    if problems:
        raise ConfigError(problems)
    return Config.from_dict(cfg)


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
