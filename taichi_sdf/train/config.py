"""Typed configs: nested dataclasses <- YAML presets <- `key=value` command-line overrides, on OmegaConf.

    @dataclass
    class Train:
        lr: float = 1e-4
        epochs: int = 2000  # passes over the data

        def __post_init__(self):
            check(self.epochs >= 1, "epochs", ">= 1", self.epochs)

    @dataclass
    class Config:
        train: Train = field(default_factory=Train)
        device: Literal["auto", "cpu", "cuda"] = "auto"

    cfg = load_config(Config, "configs/x/cpu.yaml", ["train.lr=1e-3", "device=cpu"])

Precedence: dataclass defaults < YAML file < overrides (in order). This is
`OmegaConf.merge(OmegaConf.structured(cls), OmegaConf.load(path), *overrides)` + `OmegaConf.to_object`,
so keys and types (int, float, bool, str, Path, Enum, Literal, Optional/Union, tuple/list/dict,
nested dataclasses) are OmegaConf's checks, `1e-3` is a float and `${other.key}` interpolates. What is
added here: each source is merged on its own so that errors name the key *and* where it came from (a
file, an override, a dict); a string field takes an override's raw text (`name=2024`, `out=0123`);
value constraints live in the dataclasses' `__post_init__` (which `to_object` runs) as `check(...)`
calls, and their errors get the key's full dotted path; `--help` lists the keys with their defaults
and the comments written beside the fields.

No side effects at import.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import functools
import inspect
import io
import math
import os
import pathlib
import tokenize
import types
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar, Union

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

__all__ = [
    "ConfigValueError",
    "check",
    "load_config",
    "config_from_dict",
    "validate_config",
    "save_config",
    "config_to_dict",
    "apply_overrides",
    "add_config_args",
    "config_from_args",
    "parse_config",
    "config_help",
    "preset_path",
]

T = TypeVar("T")


class ConfigValueError(ValueError):
    """A value of the right type that breaks a constraint. `config_key` is dotted from the config's root
    once the loader (or `validate_config`) has placed it. Any ValueError with `config_key` and `reason`
    attributes is treated alike (models/ cannot import this module and raise such ValueErrors)."""

    def __init__(self, key: str, reason: str, source: str | None = None) -> None:
        self.config_key, self.reason, self.source = key, reason, source
        where = f" (from {source})" if source else ""
        super().__init__(f"config key '{key}'{where}: {reason}")


def _is_constraint(exc: BaseException) -> bool:
    return isinstance(exc, ValueError) and hasattr(exc, "config_key") and hasattr(exc, "reason")


def _non_finite(value: Any) -> bool:
    """A float that is NaN or infinite, or a list/tuple/dict holding one (at any depth)."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def check(ok: bool, key: str, expected: str, value: Any) -> None:
    """In a config dataclass's `__post_init__`: raise ConfigValueError for field `key` unless `ok`.
    A NaN or infinite `value` (or one inside a tuple) fails every check, whatever its form: `nan > 0`
    is False but `not nan < 1` is True, and `inf > 0` holds."""
    if _non_finite(value):
        raise ConfigValueError(key, f"expected {expected} (a finite number), got {value!r}")
    if not ok:
        raise ConfigValueError(key, f"expected {expected}, got {value!r}")


def _float_leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every float in a nested container of plain values (lists: `key.i`)."""
    items = data.items() if isinstance(data, Mapping) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for k, v in items:
        if isinstance(v, float):
            yield f"{prefix}{k}", v
        else:
            yield from _float_leaves(v, f"{prefix}{k}.")


def _check_finite_floats(data: Any, source_of: Callable[[str], str | None]) -> None:
    """Refuse NaN/inf anywhere in a config (no key of any app means "infinite"), naming the key."""
    for key, value in _float_leaves(data):
        if not math.isfinite(value):
            raise ConfigValueError(key, f"expected a finite number, got {value!r}", source_of(key))


# ----------------------------------------------------------------------------- schema helpers


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join('...' if a is Ellipsis else _type_name(a) for a in args)}]" if args else name
    if isinstance(tp, type):
        return f"{tp.__name__} (mapping)" if dataclasses.is_dataclass(tp) else tp.__name__
    return str(tp)


@functools.lru_cache(maxsize=None)
def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - unresolvable forward refs: fall back to raw annotations
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass type in `tp`, `Optional[tp]` or `tp | None`, else None."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        dcs = [a for a in typing.get_args(tp) if isinstance(a, type) and dataclasses.is_dataclass(a)]
        if len(dcs) == 1:
            return dcs[0]
    return None


def _field_type(cls: type, key: str, source: str) -> Any:
    """The annotation of dotted `key` in `cls`; ValueError naming the key and `source` if unknown."""
    tp: Any = cls
    parts = key.split(".")
    for i, part in enumerate(parts):
        sub = _dataclass_in(tp)
        if sub is None:
            return Any  # inside a dict/list field: OmegaConf checks the element type
        names = [f.name for f in dataclasses.fields(sub) if f.init]
        if part not in names:
            raise ValueError(
                f"unknown config key '{key}' in {source}; valid keys at this level"
                f"{' (' + '.'.join(parts[:i]) + ')' if i else ''}: {', '.join(names)}"
            )
        tp = _hints(sub).get(part, Any)
    return tp


def _wants_text(tp: Any) -> bool:
    """True for str / Path fields (optionally `| None`): an override's raw text is their value."""
    args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
    args = [a for a in args if a is not type(None)]
    return bool(args) and all(a is str or (isinstance(a, type) and issubclass(a, pathlib.PurePath)) for a in args)


def _leaves(cls: type, data: Any, prefix: str, source: str) -> list[tuple[str, Any]]:
    """(dotted key, value) of every leaf of the plain mapping `data`, descending where the schema has a
    nested dataclass; unknown keys raise ValueError naming the key and `source`."""
    out = []
    for k, v in data.items():
        key = f"{prefix}{k}"
        tp = _field_type(cls, key, source)
        if _dataclass_in(tp) is not None and isinstance(v, Mapping):
            out += _leaves(cls, v, key + ".", source)
        else:
            out.append((key, v))
    return out


def _nested(key: str, value: Any) -> dict[str, Any]:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


# ----------------------------------------------------------------------------- merge + build


def _error(cls: type, exc: OmegaConfBaseException, key: str, source: str) -> ValueError:
    key = getattr(exc, "full_key", None) or key
    detail = str(exc).split("\n")[0].strip()
    tp = _field_type(cls, key, source)  # an unknown key raises here, named
    return ValueError(f"config key '{key}' (from {source}): expected {_type_name(tp)} ({detail})")


class _Loader:
    """One config being built: the merged DictConfig and which source last set each key."""

    def __init__(self, cls: type, base: Any = None) -> None:
        self.cls = cls
        self.cfg = OmegaConf.structured(base if base is not None else cls)
        self.set_by: dict[str, str] = {}

    def merge(self, data: Any, source: str) -> None:
        leaves = _leaves(self.cls, data, "", source)  # unknown keys: our message, before OmegaConf's
        try:
            self.cfg.merge_with(data)  # in place (a failed merge is never used: we raise below)
        except OmegaConfBaseException:
            for key, value in leaves:  # find the leaf at fault, to name it
                try:
                    self.cfg.merge_with(_nested(key, value))
                except OmegaConfBaseException as exc:
                    raise _error(self.cls, exc, key, source) from None
            raise  # pragma: no cover - the whole failed but no single leaf did
        for key, _ in leaves:
            for stale in [k for k in self.set_by if k.startswith(key + ".")]:
                del self.set_by[stale]
            self.set_by[key] = source

    def override(self, text: str) -> None:
        source = f"override {text!r}"
        if not isinstance(text, str) or "=" not in text:
            raise ValueError(f"override {text!r}: expected the form key=value (e.g. out=outputs/x)")
        key, raw = (s.strip() for s in text.split("=", 1))
        if not key or any(not p for p in key.split(".")):
            raise ValueError(f"override {text!r}: empty key or key part")
        tp = _field_type(self.cls, key, source)
        try:
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={raw}"]), resolve=False)["v"]
        except (OmegaConfBaseException, yaml.YAMLError, ValueError):
            value = raw  # not parseable: the type check decides
        if _wants_text(tp) and not isinstance(value, str) and (value is not None or not raw):
            value = raw  # `name=2024` on a str field is the text "2024", `out=` the empty string
        self.merge(_nested(key, value), source)

    def source_of(self, key: str) -> str:
        while key:
            if key in self.set_by:
                return self.set_by[key]
            key = key.rpartition(".")[0]
        return "the defaults"

    def build(self) -> Any:
        try:
            plain = OmegaConf.to_container(self.cfg, resolve=True, throw_on_missing=False)
        except OmegaConfBaseException:
            plain = None  # a broken interpolation: to_object below names it
        if plain is not None:
            _check_finite_floats(plain, lambda key: self.source_of(_section_key(key)))
        try:
            return OmegaConf.to_object(self.cfg)
        except MissingMandatoryValue as exc:
            key = exc.full_key or "?"
            raise ValueError(f"config key '{key}' is required (no default) but was not given") from None
        except OmegaConfBaseException as exc:  # e.g. an interpolation to a missing key
            key = getattr(exc, "full_key", None) or "?"
            raise ValueError(f"config key '{key}' (from {self.source_of(key)}): {str(exc).splitlines()[0]}") from None
        except ValueError as exc:
            if not _is_constraint(exc):
                raise
            prefix, inner = _locate(self.cfg, "")
            key = prefix + inner.config_key
            raise ConfigValueError(key, inner.reason, self.source_of(key)) from None


def _section_key(key: str) -> str:
    """`a.b.2` (an item of a list field) -> `a.b`, the key a source sets."""
    parts = key.split(".")
    while parts and parts[-1].isdigit():
        parts.pop()
    return ".".join(parts)


def _locate(node: DictConfig, prefix: str) -> tuple[str, Any]:
    """(dotted prefix, error) of the innermost section whose `__post_init__` fails."""
    for k in node.keys():
        child = None if OmegaConf.is_missing(node, k) else node[k]
        if isinstance(child, DictConfig) and _dataclass_in(OmegaConf.get_type(child)):
            try:
                return _locate(child, f"{prefix}{k}.")
            except LookupError:
                pass
    try:
        OmegaConf.to_object(node)
    except ValueError as exc:
        if _is_constraint(exc):
            return prefix, exc
        raise
    raise LookupError(prefix)


def _check_cls(cls: Any) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"cls: expected a dataclass type, got {cls!r}")


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
    try:
        data = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ValueError(f"config file {path!r} is not valid YAML: {exc}") from exc
    if not isinstance(data, DictConfig):
        raise ValueError(f"config file {path!r}: top level must be a mapping, got a list")
    return OmegaConf.to_container(data, resolve=False)


def load_config(
    cls: type[T] | T,
    path: str | os.PathLike | None = None,
    overrides: Iterable[str] = (),
) -> T:
    """Build a config: defaults, then the YAML file at `path`, then `overrides` in order.

    Args:
        cls: a (possibly nested) dataclass type, or an instance used as the starting values.
        path: optional YAML preset; its keys mirror the dataclass fields (nested mappings for nested
            dataclasses).
        overrides: strings "a.b=value", the value read as YAML (`[1, 2]`, `null`, `1e-3`).

    Raises:
        ValueError: unknown key or wrong value type (naming the key and the file or override), a
            value breaking a dataclass's constraint (ConfigValueError), a malformed override, invalid
            YAML, or a required field left unset.
        FileNotFoundError: `path` does not exist.
    """
    base = None
    if not isinstance(cls, type) and dataclasses.is_dataclass(cls):
        base, cls = cls, type(cls)
    _check_cls(cls)
    if isinstance(overrides, str):
        overrides = [overrides]  # a single "k=v" string, not its characters
    loader = _Loader(cls, base)
    if path is not None:
        loader.merge(_read_yaml(path), f"config file {os.fspath(path)!r}")
    for text in overrides:
        loader.override(text)
    return loader.build()


def config_from_dict(cls: type[T], data: Mapping[str, Any], source: str = "a config dict") -> T:
    """Build `cls` from a (saved) nested dict, with the same checks as `load_config`; `source` names
    where the dict came from in error messages."""
    _check_cls(cls)
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: expected a mapping of config keys, got {type(data).__name__}")
    loader = _Loader(cls)
    loader.merge(dict(data), source)
    return loader.build()


def apply_overrides(cfg: T, overrides: Iterable[str]) -> T:
    """Return a copy of the dataclass instance `cfg` with `key=value` overrides applied."""
    return load_config(cfg, None, overrides)


def validate_config(cfg: Any, prefix: str = "") -> None:
    """Re-run the `__post_init__` checks of `cfg` and its sections (e.g. after editing attributes);
    errors carry the full dotted key. Building a config through this module already runs them."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate_config(value, f"{prefix}{f.name}.")
        elif _non_finite(value):
            _check_finite_floats({f"{prefix}{f.name}": value}, lambda key: None)
    post = getattr(cfg, "__post_init__", None)
    if post is not None:
        try:
            post()
        except ValueError as exc:
            if not _is_constraint(exc):
                raise
            raise ConfigValueError(prefix + exc.config_key, exc.reason) from None


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


# ----------------------------------------------------------------------------- --help


def _comments(cls: type) -> tuple[str, dict[str, str]]:
    """(comment on the `class` line, else the docstring's first line; {field: comment beside it})."""
    doc = (cls.__doc__ or "").strip().split("\n")[0]
    if doc.startswith(f"{cls.__name__}("):  # the docstring dataclass() writes
        doc = ""
    try:
        lines, _ = inspect.getsourcelines(cls)
        tokens = list(tokenize.generate_tokens(io.StringIO("".join(lines)).readline))
    except (OSError, TypeError, tokenize.TokenError, IndentationError, SyntaxError):
        return doc, {}
    comments = {t.start[0]: t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT}
    head = next((i for i, line in enumerate(lines, 1) if line.lstrip().startswith("class ")), 1)
    fields = {}
    for i, line in enumerate(lines, 1):
        name = line.strip().split(":", 1)[0]
        if i > head and i in comments and ":" in line and name.isidentifier():
            fields.setdefault(name, comments[i])
    return comments.get(head) or doc, fields


def _fmt(value: Any) -> str:
    value = config_to_dict(value)
    if isinstance(value, str):
        return value if value.strip() == value and value else repr(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).strip().removesuffix("...").strip()


def config_help(cfg: Any, title: str = "config keys (set each with KEY=VALUE)") -> str:
    """The keys of the dataclass (instance or type) `cfg`, one a line, with their values (the
    defaults, or `cfg`'s) and the comment written beside each field."""
    if isinstance(cfg, type):
        try:
            cfg = load_config(cfg)
        except ValueError as exc:  # e.g. a field without a default
            return f"{title}: see {cfg.__name__} ({exc})"
    rows: list[tuple[str, str]] = []

    def walk(obj: Any, prefix: str, depth: int) -> None:
        _, notes = _comments(type(obj))
        indent = "  " * depth
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                head, _ = _comments(type(value))
                rows.append((f"{indent}{prefix}{f.name}:", notes.get(f.name) or head))
                walk(value, f"{prefix}{f.name}.", depth + 1)
            else:
                rows.append((f"{indent}{prefix}{f.name} = {_fmt(value)}", notes.get(f.name, "")))

    walk(cfg, "", 1)
    width = min(56, max(len(k) for k, _ in rows) + 2)
    lines = [f"{title}:"]
    for k, note in rows:
        lines.append(f"{k:<{width}}{note}".rstrip() if len(k) < width or not note else f"{k}  {note}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- argparse


def add_config_args(parser: argparse.ArgumentParser, cls: Any = None, title: str | None = None) -> argparse.ArgumentParser:
    """Add `--config PATH` and trailing `key=value` overrides (dest "overrides") to `parser`; with a
    config dataclass (or instance) `cls`, `--help` also lists its keys and values (`config_help`)."""
    example = "; KEY is dotted as the preset nests it"
    if cls is not None:
        key, value = _first_leaf(cls if not isinstance(cls, type) else None, cls if isinstance(cls, type) else type(cls))
        example = f", e.g. {key}={value} (the keys are listed below)"
    parser.add_argument("--config", metavar="PATH", default=None, help="YAML preset (a file, or configs/<app>/<name>.yaml)")
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE", default=[], help="config overrides applied after the preset" + example
    )
    if cls is not None:
        _add_epilog(parser, config_help(cls, title or "config keys, with their defaults (set each with KEY=VALUE)"))
    return parser


def _first_leaf(cfg: Any, cls: type) -> tuple[str, str]:
    f = next(f for f in dataclasses.fields(cls) if f.init)
    sub = _dataclass_in(_hints(cls).get(f.name))
    value = getattr(cfg, f.name) if cfg is not None else None
    if sub is not None and (value is None or dataclasses.is_dataclass(value)):
        key, text = _first_leaf(value, sub)
        return f"{f.name}.{key}", text
    if cfg is None:
        value = f.default if f.default is not dataclasses.MISSING else "..."
    return f.name, _fmt(value)


def _add_epilog(parser: argparse.ArgumentParser, text: str) -> None:
    if parser.formatter_class is argparse.HelpFormatter:
        parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the key list's lines
    parser.epilog = ((parser.epilog or "") + "\n\n" + text).strip()


def config_from_args(cls: type[T] | T, args: argparse.Namespace) -> T:
    """`load_config(cls, args.config, args.overrides)` for a parser set up by `add_config_args`."""
    return load_config(cls, getattr(args, "config", None), getattr(args, "overrides", None) or ())


def _preset_in(argv: Sequence[str]) -> str | None:
    preset = None
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif a.startswith("--config="):
            preset = a.split("=", 1)[1]
    return preset


def parse_config(
    cls: type[T] | T,
    argv: Sequence[str] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> tuple[T, argparse.Namespace]:
    """Parse `argv` (default sys.argv[1:]) into (config, namespace) in one call.

    `--help` lists the config's keys with their values under the `--config` preset in `argv` (else the
    defaults). Config errors are reported through `parser.error` (usage + message, exit code 2), the
    argparse way, so a typo on the command line never prints a traceback.
    """
    import sys

    parser = parser or argparse.ArgumentParser()
    argv = list(sys.argv[1:] if argv is None else argv)
    shown, title = cls, "config keys, with their defaults (set each with KEY=VALUE)"
    wants_help = "-h" in argv or "--help" in argv
    preset = _preset_in(argv)
    if wants_help and preset is not None:
        try:  # the values a run would start from
            shown, title = load_config(cls, preset), f"config keys, with their values under {preset} (set each with KEY=VALUE)"
        except (ValueError, FileNotFoundError):
            pass
    if not any(a.dest == "overrides" for a in parser._actions):
        add_config_args(parser, shown, title)
    elif wants_help and "config keys" not in (parser.epilog or ""):
        _add_epilog(parser, config_help(shown, title))
    args = parser.parse_intermixed_args(argv)  # options may sit between key=value overrides
    try:
        return config_from_args(cls, args), args
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
        raise  # unreachable: parser.error exits
