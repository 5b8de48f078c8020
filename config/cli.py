"""Turn a config dataclass into a command line, and configs into plain dicts.

Every field of the dataclass becomes one ``--<field_name>`` flag, spelled exactly
as the field (underscores and case kept: ``--GF_batch_size``):

==========================  ==============================================
field type                  flag
==========================  ==============================================
``bool``                    ``--x`` / ``--no-x`` (argparse.BooleanOptionalAction)
``int`` / ``float`` / ``str``  one value of that type
``Optional[T]``             one value of T, or ``none`` for None
``list[T]`` / ``tuple[T, ...]``  ``nargs="+"`` values of T (``nargs="*"`` when the default is empty)
``Literal["a", "b"]``       one of the listed choices
==========================  ==============================================

``field(metadata={"help": "...", "choices": [...]})`` gives the help text and
choices; defaults are shown in ``--help`` (once: not when the help text already
says it, nor for an empty default). ``--help`` lists the flags a new user needs
first (:data:`MAIN_FLAGS`, "main options") and everything else under "advanced
options".

Example::

    @dataclass
    class GFConfig:
        epochs: int = field(default=50, metadata={"help": "maximum epochs per fold"})

    cfg = parse_config(GFConfig, description="Train the GF model.")
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Sequence, TypeVar, Union

T = TypeVar("T")

_NONE_STRINGS = {"none", "null"}

#: The flags set apart at the top of ``--help`` (those a config has, in this order).
MAIN_FLAGS = ("data_dir", "epochs", "GF_batch_size", "DeepDXF_batch_size", "lr", "GF_lr", "device", "run_name",
              "seed", "weighting", "amp", "k_folds", "fold", "resume", "wandb")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` unless the help already mentions the default or X is empty."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, "", [], (), argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    """Return (inner type, is_optional) for ``Optional[X]`` / ``X | None``."""
    origin = typing.get_origin(tp)
    if origin is Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        optional = len(args) < len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], optional
        raise TypeError(f"unsupported union type {tp!r}: only Optional[X] is supported")
    return tp, False


def _scalar_converter(tp: Any, optional: bool) -> Callable[[str], Any]:
    """A function str -> value of ``tp`` (or None for 'none' when optional)."""
    if tp is Any:
        base: Callable[[str], Any] = str
    elif tp in (int, float, str, Path):
        base = tp
    else:
        raise TypeError(f"unsupported config field type {tp!r}")

    if not optional:
        return base

    def convert(text: str) -> Any:
        if text.strip().lower() in _NONE_STRINGS:
            return None
        return base(text)

    convert.__name__ = getattr(base, "__name__", "value")
    return convert


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _add_field(parser: argparse.ArgumentParser | argparse._ArgumentGroup, f: dataclasses.Field, tp: Any) -> None:
    """Add the flag of one dataclass field to ``parser``."""
    flag = f"--{f.name}"
    help_text = str(f.metadata.get("help", "")).replace("%", "%%")
    default = _field_default(f)
    kwargs: dict[str, Any] = {"dest": f.name, "help": help_text}
    if default is dataclasses.MISSING:
        kwargs["required"] = True
    else:
        kwargs["default"] = default

    inner, optional = _strip_optional(tp)
    choices = f.metadata.get("choices")

    if inner is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        return

    origin = typing.get_origin(inner)
    if origin is Literal:
        values = list(typing.get_args(inner))
        kwargs["choices"] = list(choices) if choices is not None else values
        kwargs["type"] = _scalar_converter(type(values[0]), optional)
        if optional:
            kwargs["choices"] = kwargs["choices"] + [None]
        parser.add_argument(flag, **kwargs)
        return

    if origin in (list, tuple, Sequence) or inner in (list, tuple):
        args = typing.get_args(inner)
        elem = args[0] if args else str
        elem_inner, elem_optional = _strip_optional(elem)
        if typing.get_origin(elem_inner) is Literal:
            values = list(typing.get_args(elem_inner))
            choices = choices if choices is not None else values
            elem_inner = type(values[0])
        kwargs["type"] = _scalar_converter(elem_inner, elem_optional)
        empty_default = default is dataclasses.MISSING or default is None or len(default) == 0
        kwargs["nargs"] = "*" if empty_default else "+"
        if choices is not None:
            kwargs["choices"] = list(choices)
        parser.add_argument(flag, **kwargs)
        return

    kwargs["type"] = _scalar_converter(inner, optional)
    if choices is not None:
        kwargs["choices"] = list(choices) + ([None] if optional else [])
    parser.add_argument(flag, **kwargs)


def paths_note() -> str:
    """The last lines of every command's ``--help``: where relative paths, the defaults
    included, are taken from (the current folder, not the toolkit's)."""
    return (f"Relative paths, the defaults included (data/, logs/, checkpoints/), are relative to the current "
            f"folder (now {os.getcwd()}), not to where the toolkit is installed.")


def build_parser(cls: type, description: str = "") -> argparse.ArgumentParser:
    """An ``argparse.ArgumentParser`` with one flag per field of dataclass ``cls``: the
    :data:`MAIN_FLAGS` it has (or the class's own ``MAIN_FLAGS`` attribute) in a first
    group ("main options"), the rest under "advanced options" (in field order)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(
        description=description or (cls.__doc__ or "").strip().split("\n")[0],
        formatter_class=_HelpFormatter,
        usage="%(prog)s [-h] [options]   (main options first, then advanced)",
        epilog=paths_note(),
    )
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    main_names = getattr(cls, "MAIN_FLAGS", MAIN_FLAGS)  # a config may name its own main flags
    main = [fields[n] for n in main_names if n in fields]
    rest = [f for n, f in fields.items() if n not in main_names]
    if main and rest:
        groups = [(parser.add_argument_group("main options"), main),
                  (parser.add_argument_group("advanced options"), rest)]
    else:
        groups = [(parser, main + rest)]
    for group, members in groups:
        for f in members:
            _add_field(group, f, hints.get(f.name, f.type))
    return parser


def _coerce(value: Any, tp: Any) -> Any:
    """Give a parsed/loaded value the container type of its field (list -> tuple)."""
    inner, _ = _strip_optional(tp)
    if value is None:
        return None
    origin = typing.get_origin(inner)
    if (origin is tuple or inner is tuple) and isinstance(value, list):
        return tuple(value)
    if (origin is list or inner is list) and isinstance(value, tuple):
        return list(value)
    if inner is Path and isinstance(value, str):
        return Path(value)
    return value


def parse_config(cls: type[T], argv: Sequence[str] | None = None, description: str = "") -> T:
    """Parse command-line flags into an instance of dataclass ``cls``.

    Args:
        cls: the config dataclass; each field becomes ``--<field_name>``.
        argv: the arguments (default: ``sys.argv[1:]``).
        description: the text shown at the top of ``--help``.
    Returns:
        ``cls(**parsed)``: the dataclass's ``__post_init__`` validation runs.
    """
    parser = build_parser(cls, description)
    ns = parser.parse_args(None if argv is None else list(argv))
    hints = typing.get_type_hints(cls)
    values = {
        f.name: _coerce(getattr(ns, f.name), hints.get(f.name, f.type))
        for f in dataclasses.fields(cls)
        if f.init
    }
    return cls(**values)


def _plain(value: Any) -> Any:
    """Convert a config value to JSON/pickle-friendly plain Python types."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_dict(value)
    return value


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (str, int, float, bool, None, lists) of a config instance's fields."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"{cfg!r} is not a dataclass instance")
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def config_from_dict(cls: type[T], d: dict[str, Any]) -> T:
    """Build ``cls`` from a dict, e.g. a config saved in a checkpoint.

    Keys that are not fields of ``cls`` are ignored (configs of older or newer
    versions still load); missing fields keep their defaults.
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: _coerce(v, hints.get(k)) for k, v in d.items() if k in names}
    return cls(**values)


__all__ = ["build_parser", "parse_config", "config_to_dict", "config_from_dict", "MAIN_FLAGS"]
