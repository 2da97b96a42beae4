"""Typed configs: dataclass schemas loaded through OmegaConf structured configs.

Merge order is defaults (the dataclass) -> YAML file -> command-line ``a.b=c`` overrides. Unknown keys and
mistyped values fail with the full dotted key path and, for unknown keys, the closest valid key. ``${oc.env:VAR}``
and ``${oc.env:VAR,default}`` work in YAML for machine-specific paths. ``recipe_main`` wraps this into the CLI
every recipe shares (``--config``, ``--dry-run``, overrides).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "load_config",
    "recipe_main",
    "to_yaml",
    "to_dict",
    "config_hash",
]


class ConfigError(ValueError):
    """A config could not be built: names the source, the dotted key and what was wrong."""


def _field_types(schema: type) -> dict[str, Any]:
    hints = typing.get_type_hints(schema)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(schema)}


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "types.UnionType"):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _check_keys(schema: type, data: Mapping[str, Any], prefix: str, source: str) -> None:
    """Walk ``data`` against ``schema`` and fail on the first key the schema does not have."""
    types = _field_types(schema)
    for key, value in data.items():
        full_key = f"{prefix}{key}"
        if key not in types:
            close = difflib.get_close_matches(str(key), list(types), n=1, cutoff=0.5)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else ""
            valid = ", ".join(sorted(types))
            raise ConfigError(
                f"{source}: unknown config key '{full_key}'{hint} (valid keys under "
                f"'{prefix.rstrip('.') or '<root>'}': {valid})"
            )
        field_type = _unwrap_optional(types[key])
        if dataclasses.is_dataclass(field_type) and isinstance(value, Mapping):
            _check_keys(field_type, value, f"{full_key}.", source)


def _first_line(err: OmegaConfBaseException) -> str:
    return str(getattr(err, "msg", err)).strip().splitlines()[0]


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=False)
    return node


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(err, 'problem', err)}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"command line: override '{item}' is not of the form a.b=c")
    try:
        return _plain(OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as err:
        raise ConfigError(f"command line: cannot parse overrides {list(overrides)}: {err}") from err


def load_config(
    schema: type[T],
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """Build a ``schema`` instance from defaults, an optional YAML file and ``a.b=c`` overrides.

    Raises:
        ConfigError: unknown key (with the nearest valid key), wrong type (with the full key), missing
            required value, unreadable file or malformed YAML (with file, line and column).
    """
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass type, got {schema!r}")
    merged = OmegaConf.structured(schema)
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_path is not None:
        path = Path(config_path)
        layers.append((str(path), _load_yaml(path)))
    if overrides:
        layers.append(("command line", _parse_overrides(overrides)))
    for source, data in layers:
        _check_keys(schema, data, "", source)
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            raise ConfigError(f"{source}: invalid value for '{key}': {_first_line(err)}") from err
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"config key '{key}': {_first_line(err)}") from err
    return typing.cast(T, obj)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config dataclass (or DictConfig), interpolations resolved."""
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return typing.cast(dict, OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))
    if isinstance(cfg, DictConfig):
        return typing.cast(dict, OmegaConf.to_container(cfg, resolve=True))
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise TypeError(f"cannot convert {type(cfg).__name__} to a config dict")


def to_yaml(cfg: Any) -> str:
    """The resolved config as YAML text, keys in schema order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of the resolved config (canonical JSON, sorted keys), for provenance and run folders."""
    canonical = json.dumps(to_dict(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]


def recipe_main(
    schema: type[T],
    run_fn: Callable[[T], Any],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    prog: str | None = None,
) -> int:
    """Shared recipe CLI: ``[--config FILE] [--dry-run] [key=value ...]``.

    ``--dry-run`` prints the resolved YAML and returns 0 without running. A config error prints one clear
    line to stderr and returns 2.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description or schema.__doc__)
    parser.add_argument("--config", type=Path, default=None, help="YAML file merged over the defaults")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.lr=1e-6")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        cfg = load_config(schema, args.config, args.overrides)
    except ConfigError as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        sys.stdout.write(to_yaml(cfg))
        sys.stdout.write(f"# config_hash: {config_hash(cfg)}\n")
        return 0
    result = run_fn(cfg)
    return result if isinstance(result, int) else 0
