"""Turning a pipeline's config class into CLI flags: every leaf field becomes ``--field-name`` on a typer command.

``@config_flags(LengthConfig)`` extends a command's signature with one option per config field not already
declared by the command; the values the user gave arrive in the command as the ``overrides`` dict (flags left out
are not in it), ready for :func:`finescale.config.build_config`.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
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


def config_flags(config_class: type[RunConfig]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        hints = typing.get_type_hints(func, include_extras=True)  # resolve string annotations once, here
        own = inspect.signature(func).parameters
        params = [p.replace(annotation=hints.get(name, p.annotation)) for name, p in own.items() if name != "overrides"]
        generated: set[str] = set()
        for path, annotation, info in leaf_fields(config_class):
            name = path[-1]
            if name in SKIP or name in own:
                continue
            flag = "--" + name.replace("_", "-")
            kind = _flag_type(annotation)
            decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
            option = typer.Option(None, *decls, help=_help(info, annotation), show_default=False)
            params.append(
                inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None)
            )
            generated.add(name)

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in generated and kwargs[k] is not None}
            for k in generated:
                kwargs.pop(k, None)
            return func(overrides=overrides, **kwargs)

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # typer must read the generated signature, not the original one
        return wrapper

    return decorate
