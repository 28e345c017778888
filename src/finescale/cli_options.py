"""Generated CLI flags.

``@config_flags(LengthConfig)`` extends a command's signature with one option per config field not already declared
by the command (fields of ``hidden`` sections and fields marked ``json_schema_extra={"flag": False}`` are left out);
the values the user gave arrive in the command as the ``overrides`` dict (flags left out are not in it), ready for
:func:`finescale.config.build_config`.

``@option_flags(into="options", **spec)`` does the same for a pipeline's own options of a shared verb: ``spec``
maps a parameter name to its ``Annotated[type, typer.Option(...)]``; the given values arrive as the ``options`` dict.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import typer

from finescale.config import RunConfig, is_list_annotation, leaf_fields, strip_optional

SKIP = {"pipeline", "preset"}


def _flag_type(annotation: Any) -> type:
    """The click-facing type of a config field: lists and literals travel as strings, pydantic validates them."""
    if is_list_annotation(annotation):
        return str
    base = strip_optional(annotation)
    if base in (bool, int, float):
        return base
    if base is Path:
        return Path
    return str


def _help(info: Any, annotation: Any) -> str:
    text = info.description or ""
    choices = [a for a in typing.get_args(annotation) if isinstance(a, str)]
    if typing.get_origin(annotation) is typing.Literal and choices:
        text += f" [{'|'.join(choices)}]"
    if is_list_annotation(annotation):
        text += " (comma-separated)"
    return text


def _is_flag(path: tuple[str, ...], annotation: Any, info: Any, hidden: Collection[str]) -> bool:
    extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
    return (
        path[-1] not in SKIP
        and path[0] not in hidden
        and extra.get("flag", True)
        and typing.get_origin(strip_optional(annotation)) is not dict
    )


def _extend(func: Callable[..., Any], new: list[inspect.Parameter], into: str) -> Callable[..., Any]:
    """``func`` with the keyword-only parameters ``new`` added to its signature; the values given for them (not
    None) reach ``func`` as one dict in its parameter ``into``."""
    hints = typing.get_type_hints(func, include_extras=True)  # resolve string annotations once, here
    own = inspect.signature(func).parameters
    params = [p.replace(annotation=hints.get(name, p.annotation)) for name, p in own.items() if name != into]
    names = {p.name for p in new}

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in names and kwargs[k] is not None}
        for k in names:
            kwargs.pop(k, None)
        return func(**{into: given}, **kwargs)

    params += new
    wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    del wrapper.__wrapped__  # typer must read the generated signature, not the original one
    return wrapper


def config_flags(
    config_class: type[RunConfig], *, hidden: Collection[str] = ()
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """One ``--field-name`` flag per leaf field of ``config_class`` outside the ``hidden`` sections."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(func).parameters
        new = []
        for path, annotation, info in leaf_fields(config_class):
            name = path[-1]
            if name in own or not _is_flag(path, annotation, info, hidden):
                continue
            flag = "--" + name.replace("_", "-")
            kind = _flag_type(annotation)
            decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
            option = typer.Option(None, *decls, help=_help(info, annotation), show_default=False)
            new.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None))
        return _extend(func, new, "overrides")

    return decorate


def option_flags(*, into: str, **spec: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``spec``'s options (name -> ``Annotated[type, typer.Option(...)]``, default None) to a command."""

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        new = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
            for name, annotation in spec.items()
        ]
        return _extend(func, new, into)

    return decorate


def merged(*specs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Option specs combined; a name given twice is a programming error."""
    out: dict[str, Any] = {}
    for spec in specs:
        for name, annotation in (spec or {}).items():
            if name in out:
                raise AssertionError(f"option {name!r} declared twice")
            out[name] = annotation
    return out
