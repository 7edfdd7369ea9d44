"""Config dataclasses <-> command-line flags and TOML recipes.

Every command owns one ``@dataclass`` whose fields are its options. Each field carries its
help text in ``field(metadata={"help": ...})``. This module turns such a dataclass into
argparse flags (``--group-size 16`` for ``group_size``), loads TOML recipes into it, and
rejects unknown keys with a message naming the key and the file.

Precedence: dataclass default < recipe file (``--recipe``) < explicit flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from r1lab.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(UserError, ValueError):
    """An impossible or malformed configuration; the message says what to change."""


def _base_type(tp: Any) -> Any:
    """Strip Optional[...] / X | None to X."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0] if len(args) == 1 else str
    return tp


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false), got {text!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per dataclass field. Defaults are left as None so we can tell what was given."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init:
            continue
        tp = _base_type(hints[f.name])
        help_text = f.metadata.get("help", "")
        default = f.default if f.default is not dataclasses.MISSING else None
        if default is not None and default != "":
            help_text = f"{help_text} (default: {default})"
        kwargs: dict[str, Any] = {"default": None, "help": help_text, "dest": f.name}
        if tp is bool:
            kwargs.update(type=_parse_bool, nargs="?", const=True, metavar="BOOL")
        elif typing.get_origin(tp) in (list, tuple):
            inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
            kwargs.update(type=inner, nargs="*")
        elif tp in (int, float, str):
            kwargs.update(type=tp)
        else:
            kwargs.update(type=str)
        parser.add_argument(_flag(f.name), **kwargs)


def load_toml(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe file not found: {p}")
    try:
        with open(p, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from exc


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        return f"a list of {_type_name(inner)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def check_type(name: str, value: Any, tp: Any) -> Any:
    """``value`` as field type ``tp`` (an int is a valid float), or a ConfigError naming the field."""
    tp = _base_type(tp)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}")
        return [check_type(f"{name}[{i}]", v, inner) for i, v in enumerate(value)]
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp, True)
    if not ok:
        raise ConfigError(f"{name} must be {_type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def build_config(cls: type, recipe: str | None, overrides: dict[str, Any], section: str | None = None):
    """Make ``cls`` from defaults, then a TOML recipe, then explicit overrides (None = not given)."""
    names = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if recipe:
        data = load_toml(recipe)
        if section and section in data and isinstance(data[section], dict):
            data = data[section]
        for key, val in data.items():
            key_norm = key.replace("-", "_")
            if isinstance(val, dict):
                continue  # other commands' sections
            if key_norm not in names:
                raise ConfigError(
                    f"{recipe}: unknown key {key!r} for {cls.__name__}; known keys: {', '.join(sorted(names))}"
                )
            values[key_norm] = check_type(f"{recipe}: key {key!r}", val, hints[key_norm])
    for key, val in overrides.items():
        if val is not None and key in names:
            values[key] = check_type(f"--{key.replace('_', '-')}", val, hints[key])
    try:
        cfg = cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc
    check = getattr(cfg, "validate", None)
    if callable(check):
        check()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
