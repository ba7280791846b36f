"""Typed configs: nested dataclasses <- YAML presets <- `key=value` command-line overrides.

    @dataclass
    class Train:
        lr: float = 1e-4
        steps: int = 2000

    @dataclass
    class Config:
        train: Train = field(default_factory=Train)
        device: Literal["auto", "cpu", "cuda"] = "auto"

    cfg = load_config(Config, "configs/x/cpu.yaml", ["train.lr=1e-3", "device=cpu"])

Precedence: dataclass defaults < YAML file < overrides (in order). Every key is checked against
the dataclass (unknown key -> ValueError naming the key and where it came from) and every value
is checked/coerced against the field's annotation (int, float, bool, str, pathlib.Path, Enum,
Literal, Optional/Union, tuple/list/dict of those, nested dataclasses).

Coercions are deliberately few: int -> float; integral float -> int; numeric strings -> int/float
(PyYAML reads `1e-3` without a dot as a string); list -> tuple; str -> Path; Enum by name or
value. Anything else of the wrong type is an error, never a silent cast. For command-line
overrides, a value YAML parses into a non-string (e.g. `name=2024`) is retried as the raw text,
so string fields need no quoting.

No side effects at import.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
import pathlib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeVar, Union

import yaml

__all__ = [
    "load_config",
    "save_config",
    "config_to_dict",
    "apply_overrides",
    "add_config_args",
    "config_from_args",
    "parse_config",
]

T = TypeVar("T")
_MISSING = dataclasses.MISSING


class _CoerceError(Exception):
    """Internal: value does not fit the type; carries an optional detail."""


# ----------------------------------------------------------------------------- type helpers


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = typing.get_args(tp)
        name = getattr(origin, "__name__", str(origin))
        if args:
            return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]"
        return name
    if isinstance(tp, type):
        if dataclasses.is_dataclass(tp):
            return f"{tp.__name__} (mapping)"
        return tp.__name__
    return str(tp)


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: fall back to raw annotations
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _init_fields(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass type in `tp`, `Optional[tp]` or `tp | None`, else None."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        dcs = [a for a in typing.get_args(tp) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        if len(dcs) == 1:
            return dcs[0]
    return None


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return _MISSING


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Return `value` converted to `tp`, or raise _CoerceError."""
    if tp is Any or tp is object:
        return value
    if tp is type(None):
        if value is None:
            return None
        raise _CoerceError()
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    if origin is typing.Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return a
        raise _CoerceError()
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        # Exact type matches first, so `int | str` keeps "1" a str and 1 an int.
        for a in args:
            if isinstance(a, type) and a is not type(None) and type(value) is a:
                return value
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except _CoerceError:
                continue
        raise _CoerceError()
    if origin is typing.Annotated:  # pragma: no cover - rare
        return _coerce(value, args[0], key)

    if origin in (tuple, list, set, frozenset, Sequence, typing.Sequence) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise _CoerceError("expected a list")
        container = origin or tp
        if container in (Sequence, typing.Sequence):
            container = tuple
        if container is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise _CoerceError(f"expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return container(items)
    if origin in (dict, Mapping, typing.Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise _CoerceError("expected a mapping")
        kt, vt = args if args else (Any, Any)
        return {_coerce(k, kt, key): _coerce(v, vt, f"{key}.{k}") for k, v in value.items()}

    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return _build(tp, value, key + ".", {}, None, "value")
        raise _CoerceError()
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _CoerceError()
    if tp is int:
        if isinstance(value, bool):
            raise _CoerceError()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise _CoerceError() from None
                if f.is_integer():
                    return int(f)
        raise _CoerceError()
    if tp is float:
        if isinstance(value, bool):
            raise _CoerceError()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # PyYAML reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise _CoerceError() from None
        raise _CoerceError()
    if tp is str:
        if isinstance(value, str):
            return value
        raise _CoerceError()
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        if isinstance(value, str) and value in tp.__members__:
            return tp[value]
        try:
            return tp(value)
        except ValueError:
            raise _CoerceError() from None
    if isinstance(tp, type) and issubclass(tp, pathlib.PurePath):
        if isinstance(value, (str, pathlib.PurePath)):
            return tp(value)
        raise _CoerceError()
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise _CoerceError()
    return value  # unknown annotation (e.g. an unresolved string): pass through unchecked


def _coerce_field(value: Any, tp: Any, key: str, source: str, raw_text: str | None) -> Any:
    try:
        return _coerce(value, tp, key)
    except _CoerceError as exc:
        if raw_text is not None and raw_text != value:
            try:  # CLI: `name=2024` on a str field means the string "2024"
                return _coerce(raw_text, tp, key)
            except _CoerceError:
                pass
        detail = f" ({exc})" if str(exc) else ""
        raise ValueError(
            f"config key '{key}' (from {source}): expected {_type_name(tp)}, "
            f"got {value!r} of type {type(value).__name__}{detail}"
        ) from None


# ----------------------------------------------------------------------------- merge + build


def _check_cls(cls: Any) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"cls: expected a dataclass type, got {cls!r}")


def _unknown_key(cls: type, key: str, source: str) -> ValueError:
    valid = ", ".join(f.name for f in _init_fields(cls))
    return ValueError(f"unknown config key '{key}' in {source}; valid keys at this level: {valid}")


def _merge(
    cls: type,
    tree: dict[str, Any],
    data: Mapping[str, Any],
    prefix: str,
    source: str,
    meta: dict[str, tuple[str, str | None]],
    raw_text: str | None = None,
) -> None:
    """Merge `data` into the nested dict `tree`, checking every key against `cls`.

    `meta[dotted key] = (source, raw CLI text or None)` is kept for error messages.
    """
    names = {f.name for f in _init_fields(cls)}
    hints = _hints(cls)
    for k, v in data.items():
        key = f"{prefix}{k}"
        if not isinstance(k, str) or k not in names:
            raise _unknown_key(cls, key, source)
        sub = _dataclass_in(hints[k])
        if sub is not None and isinstance(v, Mapping):
            node = tree.get(k)
            if not isinstance(node, dict):
                node = tree[k] = {}
            _merge(sub, node, v, key + ".", source, meta, raw_text)
        else:
            tree[k] = v
            # Forget metadata of sub-keys this value replaces.
            for stale in [m for m in meta if m.startswith(key + ".")]:
                del meta[stale]
            meta[key] = (source, raw_text)


def _build(
    cls: type,
    tree: Mapping[str, Any],
    prefix: str,
    meta: dict[str, tuple[str, str | None]],
    base: Any,
    default_source: str,
) -> Any:
    """Instantiate `cls` from the checked nested dict `tree` on top of `base` (or the defaults)."""
    hints = _hints(cls)
    names = {f.name for f in _init_fields(cls)}
    for k in tree:
        if k not in names:
            raise _unknown_key(cls, f"{prefix}{k}", meta.get(f"{prefix}{k}", (default_source, None))[0])
    kwargs: dict[str, Any] = {}
    for f in _init_fields(cls):
        key = f"{prefix}{f.name}"
        tp = hints.get(f.name, f.type)
        if f.name in tree:
            value = tree[f.name]
            sub = _dataclass_in(tp)
            if sub is not None and isinstance(value, Mapping):
                sub_base = getattr(base, f.name) if base is not None else _default_of(f)
                if sub_base is _MISSING or not isinstance(sub_base, sub):
                    sub_base = None  # e.g. Optional[Sub] = None: start from Sub's defaults
                kwargs[f.name] = _build(sub, value, key + ".", meta, sub_base, default_source)
            else:
                source, raw = meta.get(key, (default_source, None))
                kwargs[f.name] = _coerce_field(value, tp, key, source, raw)
        elif base is not None:
            kwargs[f.name] = getattr(base, f.name)
        elif f.default is _MISSING and f.default_factory is _MISSING:  # type: ignore[misc]
            raise ValueError(f"config key '{key}' is required (no default) but was not given")
    return cls(**kwargs)


def _parse_override(text: str) -> tuple[list[str], Any, str]:
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"override {text!r}: expected the form key=value (e.g. train.lr=1e-3)")
    key, raw = text.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p for p in parts):
        raise ValueError(f"override {text!r}: empty key or key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not valid YAML: treat as a plain string, type check decides
    return parts, value, raw


def preset_path(path: str | os.PathLike) -> str:
    """`path` itself when it exists; else, for a preset named as in the source tree
    (`configs/idr/cpu.yaml`) or below it (`idr/cpu.yaml`), the copy shipped in `taichi_sdf.configs`,
    so the apps' default presets resolve from any working folder and in an installed package."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return path
    import taichi_sdf.configs

    shipped = pathlib.Path(taichi_sdf.configs.__file__).parent
    rel = pathlib.PurePath(path)
    if rel.parts and rel.parts[0] == "configs":
        rel = pathlib.PurePath(*rel.parts[1:])
    candidate = shipped / rel
    return str(candidate) if not rel.is_absolute() and candidate.is_file() else path


def _read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    path = preset_path(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path!r}")
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ValueError(f"config file {path!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path!r}: top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(
    cls: type[T] | T,
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
) -> T:
    """Build a config: defaults, then the YAML file at `path`, then `overrides` in order.

    Args:
        cls: a (possibly nested) dataclass type, or an instance used as the starting values.
        path: optional YAML preset; its keys must mirror the dataclass fields (nested mappings
            for nested dataclasses). Unknown keys raise ValueError naming the key and the file.
        overrides: strings "a.b=value"; the value is parsed with `yaml.safe_load`, then checked
            against the field type of `a.b`.

    Raises:
        ValueError: unknown key, wrong value type (names the key and the expected type), a
            malformed override, invalid YAML, or a required field left unset.
        FileNotFoundError: `path` does not exist.
    """
    base = None
    if not isinstance(cls, type) and dataclasses.is_dataclass(cls):
        base, cls = cls, type(cls)
    _check_cls(cls)
    if isinstance(overrides, str):
        overrides = [overrides]  # a single "k=v" string, not its characters
    tree: dict[str, Any] = {}
    meta: dict[str, tuple[str, str | None]] = {}
    if path is not None:
        _merge(cls, tree, _read_yaml(path), "", f"config file {os.fspath(path)!r}", meta)
    for text in overrides:
        parts, value, raw = _parse_override(text)
        nested: Any = value
        for p in reversed(parts[1:]):
            nested = {p: nested}
        _merge(cls, tree, {parts[0]: nested}, "", f"override {text!r}", meta, raw_text=raw)
    return _build(cls, tree, "", meta, base, "defaults")


def config_from_dict(cls: type[T], data: Mapping[str, Any], source: str = "a config dict") -> T:
    """Build `cls` from a (saved) nested dict, with the same key and type checks as `load_config`;
    `source` names where the dict came from in error messages."""
    _check_cls(cls)
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    tree: dict[str, Any] = {}
    meta: dict[str, tuple[str, str | None]] = {}
    _merge(cls, tree, data, "", source, meta)
    return _build(cls, tree, "", meta, None, source)


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Return a copy of the dataclass instance `cfg` with `key=value` overrides applied."""
    return load_config(cfg, None, overrides)


def config_to_dict(cfg: Any) -> Any:
    """Convert a dataclass config to plain YAML/JSON-safe Python (dict, list, str, numbers, bool, None).

    Tuples become lists, Enums their value, paths strings; `load_config` converts them back.
    """
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return {config_to_dict(k): config_to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple, set, frozenset)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, enum.Enum):
        return config_to_dict(cfg.value)
    if isinstance(cfg, pathlib.PurePath):
        return str(cfg)
    if isinstance(cfg, (str, int, float, bool)) or cfg is None:
        return cfg
    if hasattr(cfg, "item") and callable(cfg.item):  # numpy / torch scalars
        return cfg.item()
    raise TypeError(f"cfg: cannot serialise a value of type {type(cfg).__name__}: {cfg!r}")


def save_config(cfg: Any, path: str | os.PathLike) -> str:
    """Write `cfg` (a dataclass instance) as YAML to `path`, atomically. Returns the path."""
    from taichi_sdf.train.checkpoint import atomic_write_bytes

    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"cfg: expected a dataclass instance, got {type(cfg).__name__}")
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False)
    return atomic_write_bytes(path, text.encode("utf-8"))


# ----------------------------------------------------------------------------- argparse


def add_config_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add `--config PATH` and trailing `key=value` overrides (dest "overrides") to `parser`."""
    parser.add_argument("--config", metavar="PATH", default=None, help="YAML preset (e.g. configs/x/cpu.yaml)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        default=[],
        help="config overrides applied after the preset, e.g. train.lr=1e-3 train.steps=100",
    )
    return parser


def config_from_args(cls: type[T] | T, args: argparse.Namespace) -> T:
    """`load_config(cls, args.config, args.overrides)` for a parser set up by `add_config_args`."""
    return load_config(cls, getattr(args, "config", None), getattr(args, "overrides", None) or ())


def parse_config(
    cls: type[T] | T,
    argv: Sequence[str] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> tuple[T, argparse.Namespace]:
    """Parse `argv` (default sys.argv[1:]) into (config, namespace) in one call.

    Config errors are reported through `parser.error` (usage + message, exit code 2), the
    argparse way, so a typo on the command line never prints a traceback.
    """
    parser = parser or argparse.ArgumentParser()
    if not any(a.dest == "overrides" for a in parser._actions):
        add_config_args(parser)
    args = parser.parse_intermixed_args(argv)  # options may sit between key=value overrides
    try:
        return config_from_args(cls, args), args
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
