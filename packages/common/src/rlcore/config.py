"""Typed configs: dataclass schemas loaded through OmegaConf structured configs.

Merge order is defaults (the dataclass) -> YAML file(s) -> command-line ``a.b=c`` overrides. A YAML file may
start from other files with a top-level ``base:`` key (one path or a list, relative to the including file):
the bases are merged first, in list order, each with its own bases before it, then the including file's own
keys on top. Include cycles fail with the chain of files. Unknown keys fail with the full dotted key path and
the closest valid key (or, for a key the schema lists in its ``RENAMED_KEYS`` class attribute, the new name;
a schema with ``IDENTITY_KEEPS_OLD_NAMES = True`` still hashes those keys under their old names, see
:func:`identity_dict`);
a value outside a ``typing.Literal`` field's choices fails with the closest valid value;
a non-empty path in a field marked ``must_exist`` (see :func:`existing_path`) must exist. ``${oc.env:VAR}`` and
``${oc.env:VAR,default}`` work in YAML for machine-specific paths. ``recipe_main`` wraps this into the CLI
every recipe shares (``--config``, ``--dry-run``, ``--explain``, overrides).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import json
import os
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
    "BASE_KEY",
    "ConfigError",
    "LoadedConfig",
    "config_hash",
    "existing_path",
    "explain_lines",
    "identity_dict",
    "load_config",
    "load_config_explained",
    "recipe_main",
    "to_dict",
    "to_yaml",
]

# Top-level YAML key naming the file(s) a config starts from.
BASE_KEY = "base"
DEFAULT_SOURCE = "default"
COMMAND_LINE = "command line"


class ConfigError(ValueError):
    """A config could not be built: names the source, the dotted key and what was wrong."""


def existing_path(default: Any = "", *, factory: Callable[[], Any] | None = None, hint: str = "") -> Any:
    """A dataclass field whose non-empty value (a path or a list of paths) must exist when the config loads.

    ``hint`` is appended to the error (e.g. the command that creates the file). Paths that only exist once an
    earlier stage ran (a default model folder) should not use this: check them where the run needs them.
    """
    metadata = {"must_exist": True, "hint": hint}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


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


def _literal_choices(tp: Any) -> tuple[Any, ...] | None:
    return typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None


def _check_choice(value: Any, choices: tuple[Any, ...], full_key: str, source: str) -> None:
    if value is None or value in choices or (isinstance(value, str) and "${" in value):
        return
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    valid = ", ".join(str(c) for c in choices)
    raise ConfigError(f"{source}: invalid value {value!r} for '{full_key}'{hint} (valid values: {valid})")


def _is_block(field_type: Any) -> bool:
    return dataclasses.is_dataclass(_unwrap_optional(field_type))


def _check_keys(
    schema: type, data: Mapping[str, Any], prefix: str, source: str, renamed: Mapping[str, str] | None = None
) -> None:
    """Walk ``data`` against ``schema``: fail on the first unknown key or value outside a Literal's choices.

    ``renamed`` (the root schema's ``RENAMED_KEYS``) maps an old dotted key to its new name, so a config written
    with the old name fails with the key to use instead.
    """
    types = _field_types(schema)
    for key, value in data.items():
        full_key = f"{prefix}{key}"
        # an old leaf may have become a block of the same name (``tracking: false`` -> ``tracking.enabled``)
        became_block = key in types and not isinstance(value, Mapping) and _is_block(types[key])
        if renamed and full_key in renamed and (key not in types or became_block):
            raise ConfigError(f"{source}: config key '{full_key}' is now '{renamed[full_key]}'; rename it")
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
            _check_keys(field_type, value, f"{full_key}.", source, renamed)
        elif (choices := _literal_choices(field_type)) is not None:
            _check_choice(value, choices, full_key, source)
        elif typing.get_origin(field_type) is list and isinstance(value, list):
            item_choices = _literal_choices(_unwrap_optional((typing.get_args(field_type) or (Any,))[0]))
            for index, item in enumerate(value if item_choices is not None else ()):
                _check_choice(item, item_choices, f"{full_key}[{index}]", source)


def _check_paths(obj: Any, raw: Mapping[str, Any], prefix: str = "") -> None:
    """Every non-empty value of a ``must_exist`` field names an existing file or folder.

    A value built from an interpolation (``${oc.env:DATA}/train.parquet``) names a machine-specific location
    that may be created later (downloads, index builds): the recipe checks it where it reads it.
    """
    for spec in dataclasses.fields(obj):
        value = getattr(obj, spec.name)
        raw_value = raw.get(spec.name) if isinstance(raw, Mapping) else None
        full_key = f"{prefix}{spec.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_paths(value, raw_value if isinstance(raw_value, Mapping) else {}, f"{full_key}.")
        elif spec.metadata.get("must_exist") and value:
            items = value if isinstance(value, list | tuple) else [value]
            raw_items = raw_value if isinstance(raw_value, list | tuple) else [raw_value] * len(items)
            for item, raw_item in zip(items, raw_items):
                if not item or (isinstance(raw_item, str) and "${" in raw_item) or Path(str(item)).exists():
                    continue
                hint = spec.metadata.get("hint") or ""
                raise ConfigError(
                    f"config key '{full_key}': path not found: {item}" + (f" ({hint})" if hint else "")
                )


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


def _file_layers(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """``(source, data)`` of ``path`` and its bases, in merge order (bases first, ``path`` last)."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{path}: '{BASE_KEY}' include cycle: {cycle}")
    data = _load_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: '{BASE_KEY}' must be a file name or a list of file names, got {bases!r}")
    layers: list[tuple[str, dict[str, Any]]] = []
    for base in bases:
        base_path = Path(os.path.normpath(path.parent / base))
        if not base_path.is_file():
            raise ConfigError(f"{path}: '{BASE_KEY}' file not found: {base} (looked for {base_path})")
        layers.extend(_file_layers(base_path, (*chain, resolved)))
    layers.append((str(path), data))
    return layers


def _parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"command line: override '{item}' is not of the form a.b=c")
    # `key=` sets the empty string (OmegaConf alone would read None); `key=null` still sets None
    items = [f"{item}''" if item.endswith("=") else item for item in overrides]
    try:
        return _plain(OmegaConf.from_dotlist(items))
    except OmegaConfBaseException as err:
        raise ConfigError(f"command line: cannot parse overrides {list(overrides)}: {err}") from err


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> value of every leaf of a nested mapping (lists and empty mappings are leaves)."""
    if not isinstance(data, Mapping) or (not data and prefix):
        return {prefix.rstrip("."): data}
    found: dict[str, Any] = {}
    for key, value in data.items():
        found.update(_leaves(value, f"{prefix}{key}."))
    return found


@dataclasses.dataclass
class LoadedConfig(typing.Generic[T]):
    """A built config and where each of its values came from."""

    config: T
    # merge order: "default" is implied first; then each file (bases before includers), then "command line"
    sources: list[str]
    # dotted leaf key -> the last source that set it (absent: the dataclass default)
    origin: dict[str, str]


def load_config_explained(
    schema: type[T],
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> LoadedConfig[T]:
    """Like :func:`load_config`, and also returns the merged sources and each value's origin."""
    if not dataclasses.is_dataclass(schema):
        raise TypeError(f"schema must be a dataclass type, got {schema!r}")
    merged = OmegaConf.structured(schema)
    layers: list[tuple[str, dict[str, Any]]] = []
    if config_path is not None:
        layers.extend(_file_layers(Path(config_path)))
    if overrides:
        layers.append((COMMAND_LINE, _parse_overrides(overrides)))
    origin: dict[str, str] = {}
    renamed = getattr(schema, "RENAMED_KEYS", None)
    for source, data in layers:
        _check_keys(schema, data, "", source, renamed)
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        except OmegaConfBaseException as err:
            key = getattr(err, "full_key", None) or "?"
            raise ConfigError(f"{source}: invalid value for '{key}': {_first_line(err)}") from err
        for key in _leaves(data):
            # a mapping replaced by a leaf (or the reverse) drops what was recorded below/above it
            for old in [k for k in origin if k.startswith(f"{key}.") or key.startswith(f"{k}.")]:
                del origin[old]
            origin[key] = source
    try:
        obj = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise ConfigError(f"config key '{key}': {_first_line(err)}") from err
    _check_paths(obj, typing.cast(dict, OmegaConf.to_container(merged, resolve=False)))
    return LoadedConfig(typing.cast(T, obj), [source for source, _ in layers], origin)


def load_config(
    schema: type[T],
    config_path: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> T:
    """Build a ``schema`` instance from defaults, an optional YAML file (and its bases) and ``a.b=c`` overrides.

    Raises:
        ConfigError: unknown key (with the nearest valid key), value outside a Literal's choices (with the
            nearest valid value), wrong type (with the full key), missing required value, missing
            ``must_exist`` path, unreadable file, include cycle or malformed YAML (with file, line and column).
    """
    return load_config_explained(schema, config_path, overrides).config


def explain_lines(loaded: LoadedConfig[Any]) -> list[str]:
    """``key: value  # source`` for every resolved leaf, in schema order, plus the merge order on top."""
    chain = " -> ".join([DEFAULT_SOURCE, *dict.fromkeys(loaded.sources)])
    lines = [f"# merge order (later wins): {chain}"]
    rows = []
    for key, value in _leaves(to_dict(loaded.config)).items():
        source = next((loaded.origin[k] for k in (key, *_parents(key)) if k in loaded.origin), DEFAULT_SOURCE)
        rows.append((f"{key}: {json.dumps(value, default=str)}", source))
    width = min(max((len(text) for text, _ in rows), default=0), 72)
    lines.extend(f"{text:<{width}}  # {source}" for text, source in rows)
    return lines


def _parents(key: str) -> list[str]:
    parts = key.split(".")
    return [".".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


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


def move_key(tree: dict[str, Any], source: str, target: str) -> None:
    """Move the value at dotted ``source`` to dotted ``target`` (nothing when ``source`` is absent).

    Blocks that the move leaves empty are removed, so ``tracking.enabled`` -> ``tracking`` leaves a plain leaf.
    """
    *parents, leaf = source.split(".")
    path: list[dict[str, Any]] = [tree]
    for part in parents:
        child = path[-1].get(part) if isinstance(path[-1], dict) else None
        if not isinstance(child, dict):
            return
        path.append(child)
    if leaf not in path[-1]:
        return
    value = path[-1].pop(leaf)
    for parent, part in reversed(list(zip(path[:-1], parents, strict=True))):
        if parent[part]:
            break
        del parent[part]
    *parents, leaf = target.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def identity_dict(cfg: Any) -> dict[str, Any]:
    """:func:`to_dict` as run identities see it: the schema's renamed keys spelled the old way, and settings a schema
    added later (``IDENTITY_OMIT_AT_DEFAULT``) left out while they hold their default.

    A schema that sets ``IDENTITY_KEEPS_OLD_NAMES = True`` renamed keys after runs were stored under the old
    names (a pure rename, values unchanged); hashing the old spelling keeps those runs' hashes, run folders and
    stage keys, so they are still found and reused. Other schemas hash :func:`to_dict` unchanged.
    """
    tree = to_dict(cfg)
    _omit_new_settings_at_default(cfg, tree)
    schema = type(cfg)
    if getattr(schema, "IDENTITY_KEEPS_OLD_NAMES", False):
        renamed = getattr(schema, "RENAMED_KEYS", {})
        # an old leaf that became a block (``tracking`` -> ``tracking.enabled``) is put back after the other keys
        # that moved into that block have left it
        for old, new in sorted(
            renamed.items(), key=lambda item: any(n.startswith(f"{item[0]}.") for n in renamed.values())
        ):
            move_key(tree, new, old)
    return tree


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _omit_new_settings_at_default(cfg: Any, tree: Any) -> None:
    """Remove from ``tree`` the settings a (nested) schema lists in ``IDENTITY_OMIT_AT_DEFAULT`` while they hold
    their default: a setting added later, off by default, leaves the identity of every config that does not use
    it (run folders, stage reuse, world folders) as it was."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type) and isinstance(tree, dict)):
        return
    omit = getattr(type(cfg), "IDENTITY_OMIT_AT_DEFAULT", ())
    for f in dataclasses.fields(cfg):
        if f.name not in tree:
            continue
        value = getattr(cfg, f.name)
        if f.name in omit and value == _field_default(f):
            del tree[f.name]
        else:
            _omit_new_settings_at_default(value, tree[f.name])


def config_hash(cfg: Any, length: int = 12) -> str:
    """Stable short hash of the resolved config (canonical JSON of :func:`identity_dict`, sorted keys), for
    provenance and run folders."""
    canonical = json.dumps(identity_dict(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:length]


def recipe_main(
    schema: type[T],
    run_fn: Callable[[T], Any],
    argv: Sequence[str] | None = None,
    description: str | None = None,
    prog: str | None = None,
) -> int:
    """Shared recipe CLI: ``[--config FILE] [--dry-run | --explain] [key=value ...]``.

    The config is validated (keys, Literal choices, ``must_exist`` paths and the schema's own ``validate()``
    when it has one) before anything runs. ``--dry-run`` prints the resolved YAML and returns 0 without
    running; ``--explain`` prints every resolved value with the default, file or command line it came from.
    A config error prints one clear line to stderr and returns 2.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description or schema.__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"YAML file merged over the defaults (may name '{BASE_KEY}:' files)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    parser.add_argument(
        "--explain", action="store_true", help="print each resolved value and where it came from, and exit"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. optim.lr=1e-6")
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        loaded = load_config_explained(schema, args.config, args.overrides)
        validate = getattr(loaded.config, "validate", None)
        if callable(validate):
            validate()
    except (ConfigError, ValueError) as err:
        print(f"config error: {err}", file=sys.stderr)
        return 2
    cfg = loaded.config
    if args.explain:
        sys.stdout.write("\n".join(explain_lines(loaded)) + "\n")
        return 0
    if args.dry_run:
        sys.stdout.write(to_yaml(cfg))
        sys.stdout.write(f"# config_hash: {config_hash(cfg)}\n")
        return 0
    result = run_fn(cfg)
    return result if isinstance(result, int) else 0
