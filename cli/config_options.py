"""Typer options made from a stage's config dataclass, so the CLI cannot drift from the configs.

Every field of the dataclass becomes one option: the name with dashes, the field's default, help from
``field(metadata={"help": ...})`` or else the comment on (or just above) the field's line. By annotation:

* ``bool`` -> ``--x/--no-x``; ``int``, ``float``, ``str`` and their ``Optional`` forms -> a plain option;
* a field named after a registry kind (``source`` -> query generators) -> the registered names as choices;
* ``list[int]`` / ``list[str]`` -> a repeatable option (also under its singular name: ``--metric``);
* ``dict[str, Any]`` -> repeatable ``KEY=VALUE``, the value read as YAML (``options`` keeps ``-o/--option``);
* anything else -> one value read as YAML.

Options of a list or dict field that are not given leave the dataclass default in place. The values then go
through the dataclass itself, so its validation is the CLI's: a bad value is a one-line error and exit code 2.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import re
import tokenize
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Annotated, Any, Optional

import typer
import yaml

from retrdistill import registry
from retrdistill.errors import RetrdistillError

# config fields whose value is a registered name, and the registry kind it names (a field named after a kind
# names that kind)
REGISTRY_FIELDS: dict[str, str] = {"source": "query_generator"}
_CTX = "retrdistill_context_"  # the typer.Context the wrapped command receives (not an option)
_PARSE_ONLY = "retrdistill.parse_only"  # ctx.meta flag: build the config and return it, run nothing


class OptionError(Exception):
    """A command-line value that cannot become the config; the message names the value and the expected form."""


@dataclasses.dataclass(frozen=True)
class Custom:
    """A field parsed by the command's own rule: ``convert`` turns the option's value into the field's value
    (``None``: the option was not given, the dataclass default stays) and raises OptionError on a bad one."""

    annotation: Any
    option: Any  # a typer.Option(...) with its names and help
    convert: Callable[[Any], Any]
    default: Any = None


@dataclasses.dataclass(frozen=True)
class FieldOption:
    """One config field as a command-line option."""

    name: str
    annotation: Any  # Annotated[type, typer.Option(...)], as typer reads it
    default: Any
    convert: Callable[[Any], Any]  # option value -> field value; None: leave the dataclass default


def config_command(app: typer.Typer, config_cls: type, *, name: str | None = None,
                   custom: Mapping[str, Custom] | None = None) -> Callable[[Callable], Callable]:
    """Register ``fn(cfg, **own_options)`` as a command taking ``config_cls``'s fields as options too.

    The command's own parameters (paths, ``--force``, ...) stay as declared; the config is built from the
    field options before ``fn`` runs, and a value it refuses ends the command with a one-line error, exit 2.
    """

    def wrap(fn: Callable) -> Callable:
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "cfg"]
        fields = field_options(config_cls, custom=custom, taken=_declared_names(own))
        clash = {p.name for p in own} & {f.name for f in fields}
        if clash:
            raise TypeError(f"{fn.__name__}: parameter(s) {', '.join(sorted(clash))} shadow {config_cls.__name__} fields")

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            ctx = kwargs.pop(_CTX)
            values = {f.name: kwargs.pop(f.name) for f in fields}
            try:
                cfg = build_config(config_cls, values, fields)
            except OptionError as exc:
                if ctx.meta.get(_PARSE_ONLY):
                    raise
                typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
                raise typer.Exit(2) from None
            if ctx.meta.get(_PARSE_ONLY):
                return cfg
            return fn(cfg, **kwargs)

        keyword = inspect.Parameter.KEYWORD_ONLY
        config = [inspect.Parameter(f.name, keyword, default=f.default, annotation=f.annotation) for f in fields]
        required = [p.replace(kind=keyword) for p in own if p.default is inspect.Parameter.empty]
        optional = [p.replace(kind=keyword) for p in own if p.default is not inspect.Parameter.empty]
        # --help order: the command's required paths, the config, then its other options
        params = [*required, *config, *optional, inspect.Parameter(_CTX, keyword, annotation=typer.Context)]
        command.__signature__ = inspect.Signature(params)
        command.__annotations__ = {p.name: p.annotation for p in params}
        app.command(name)(command)
        return command

    return wrap


def parse_config(app: typer.Typer, command: str, args: Sequence[str]) -> Any:
    """The config ``retrdistill COMMAND ARGS`` would run with: the real command parses ``args`` and builds its
    config, then returns it instead of running the stage. A value the config refuses raises OptionError."""
    cmd = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    with cmd.make_context(command, list(args)) as ctx:
        ctx.meta[_PARSE_ONLY] = True
        return cmd.invoke(ctx)


def build_config(config_cls: type, values: Mapping[str, Any], fields: Sequence[FieldOption]) -> Any:
    """``config_cls(**fields)`` from parsed option values; a bad value or a failed validation -> OptionError."""
    kwargs = {}
    for f in fields:
        value = f.convert(values[f.name])
        if value is not None:  # None: not given (or the default None), the dataclass default stays
            kwargs[f.name] = value
    try:
        return config_cls(**kwargs)
    except (RetrdistillError, ValueError, TypeError) as exc:
        raise OptionError(f"invalid {_label(config_cls)}: {exc}") from None


def field_options(config_cls: type, *, custom: Mapping[str, Custom] | None = None,
                  taken: set[str] = frozenset()) -> list[FieldOption]:
    """One :class:`FieldOption` per field of ``config_cls``; ``taken``: option names the command already uses."""
    hints = typing.get_type_hints(config_cls)
    comments = _field_comments(config_cls)
    out = []
    for f in dataclasses.fields(config_cls):
        if custom and f.name in custom:
            c = custom[f.name]
            out.append(FieldOption(f.name, Annotated[c.annotation, c.option], c.default, c.convert))
            continue
        help_text = _sentence(f.metadata.get("help") or comments.get(f.name, ""))
        out.append(_field_option(f, hints[f.name], help_text, taken))
    return out


# ------------------------------------------------------------------------------------------------ one field
def _field_option(f: dataclasses.Field, hint: Any, help_text: str, taken: set[str]) -> FieldOption:
    dash = f.name.replace("_", "-")
    inner, optional = _unwrap_optional(hint)
    default = _default(f)
    kind = REGISTRY_FIELDS.get(f.name) or (f.name if f.name in registry.KINDS else None)
    if kind and inner is str:
        choices = _choices(kind)
        help_text = help_text or f"A registered {kind.replace('_', ' ')} (see `retrdistill list`)."
        tp = Optional[choices] if optional else choices
        return FieldOption(f.name, Annotated[tp, typer.Option(f"--{dash}", help=help_text)], default, _enum_value)
    if inner is bool:
        tp = Optional[bool] if optional else bool
        return FieldOption(f.name, Annotated[tp, typer.Option(f"--{dash}/--no-{dash}", help=help_text)], default, _same)
    if inner in (int, float, str):
        tp = Optional[inner] if optional else inner
        return FieldOption(f.name, Annotated[tp, typer.Option(f"--{dash}", help=help_text)], default, _same)
    origin, args = typing.get_origin(inner), typing.get_args(inner)
    shown = _shown_default(f)
    names = _plural_names(f.name, taken)
    if origin is list and args and args[0] in (int, float, str):
        help_text = _join(help_text, "Repeatable.")
        option = typer.Option(*names, help=help_text, show_default=shown)
        return FieldOption(f.name, Annotated[Optional[list[args[0]]], option], None, _list_or_none)
    if origin is dict and args and args[0] is str:
        if f.name == "options":
            names.append("-o")
        help_text = _join(help_text, "Repeatable KEY=VALUE, the value read as YAML.")
        option = typer.Option(*names, help=help_text, show_default=shown, metavar="KEY=VALUE")
        flag = next((n for n in names[1:] if n.startswith("--")), names[0])  # the singular, as usually typed
        return FieldOption(f.name, Annotated[Optional[list[str]], option], None, functools.partial(_mapping, flag=flag))
    help_text = _join(help_text, "Read as YAML.")
    option = typer.Option(f"--{dash}", help=help_text, show_default=shown, metavar="YAML")
    return FieldOption(f.name, Annotated[Optional[str], option], None, functools.partial(_yaml, flag=f"--{dash}"))


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0], True
    return hint, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return None  # the option's absence keeps the factory's value
    return ...  # required


def _shown_default(f: dataclasses.Field) -> str | bool:
    if f.default_factory is dataclasses.MISSING:
        return False
    value = f.default_factory()
    if not value:
        return False
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    return " ".join(map(str, value))


def _plural_names(name: str, taken: set[str]) -> list[str]:
    dash = name.replace("_", "-")
    names = [f"--{dash}"]
    if dash.endswith("s") and not dash.endswith("ss") and f"--{dash[:-1]}" not in taken:
        names.append(f"--{dash[:-1]}")
    return names


def _choices(kind: str) -> type[Enum]:
    """An Enum of the registered names of one kind, so --help lists exactly what the registry holds."""
    return Enum(f"{kind.title().replace('_', '')}Choice", {n: n for n in registry.names(kind)}, type=str)


# ------------------------------------------------------------------------------------------------ converters
def _same(value: Any) -> Any:
    return value


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, Enum) else value


def _list_or_none(value: Sequence[Any] | None) -> list[Any] | None:
    return list(value) if value else None


def _mapping(pairs: Sequence[str] | None, *, flag: str) -> dict[str, Any] | None:
    if not pairs:
        return None
    return parse_pairs(pairs, flag=flag)


def parse_pairs(pairs: Sequence[str], *, flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict, each value read as YAML."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"{flag} {pair!r}: expected KEY=VALUE (the value read as YAML)")
        out[key.strip()] = _load_yaml(value, flag=f"{flag} {pair!r}")
    return out


def _yaml(value: str | None, *, flag: str) -> Any:
    return None if value is None else _load_yaml(value, flag=f"{flag} {value!r}")


def _load_yaml(text: str, *, flag: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        raise OptionError(f"{flag}: the value is not valid YAML ({problem})") from None


# ------------------------------------------------------------------------------------------------ help text
def _field_comments(config_cls: type) -> dict[str, str]:
    """Each field's comment: the one ending its line, else the comment lines just above it."""
    try:
        source = inspect.getsource(config_cls)
    except (OSError, TypeError):
        return {}
    comments: dict[int, str] = {}
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type == tokenize.COMMENT:
                comments[tok.start[0]] = tok.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):
        return {}
    lines = source.splitlines()
    names = {f.name for f in dataclasses.fields(config_cls)}
    start = next((i for i, line in enumerate(lines) if line.lstrip().startswith("class ")), 0)
    body = next((re.match(r" *", line).group() for line in lines[start + 1:] if line.strip()), "    ")
    out = {}
    for number, line in enumerate(lines, start=1):
        match = re.match(rf"{body}(\w+)\s*:", line)  # a field line of the class body, not of a method
        if not match or match.group(1) not in names or match.group(1) in out:
            continue
        text = comments.get(number) if not line.lstrip().startswith("#") else None
        if not text:
            above = []
            row = number - 1
            while row in comments and lines[row - 1].lstrip().startswith("#"):
                above.insert(0, comments[row])
                row -= 1
            text = " ".join(above)
        if text:
            out[match.group(1)] = text
    return out


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?", ")")) else text + "."


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _label(config_cls: type) -> str:
    return config_cls.__name__.removesuffix("Config").lower() + " config"


def _declared_names(params: Sequence[inspect.Parameter]) -> set[str]:
    """The option strings (``--out``, ``-q``, ...) a command's own parameters declare."""
    names: set[str] = set()
    for p in params:
        names.add("--" + p.name.replace("_", "-"))
        for meta in getattr(p.annotation, "__metadata__", ()):
            for decl in getattr(meta, "param_decls", None) or ():
                names.update(part for part in decl.split("/") if part)
    return names


__all__ = ["Custom", "FieldOption", "OptionError", "REGISTRY_FIELDS", "build_config", "config_command",
           "field_options", "parse_pairs", "parse_config"]
