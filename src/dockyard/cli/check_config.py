"""`dockyard check-config [FILE]`: validate a settings file and the DOCKYARD_* environment before a
server is started with them. It names each wrong key, where it came from (file or environment) and the
type it expects, and suggests the nearest setting for an unknown key (a typo is otherwise a silent
default in the environment, or a start-up failure in the file)."""

from __future__ import annotations

import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Optional

import annotated_types
import typer
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from rich.markup import escape

from dockyard.cli.options import console, database_label
from dockyard.settings import CONFIG_ENV, Settings

# DOCKYARD_* variables that are not settings: the client commands' options and the settings-file path.
CLIENT_ENV = frozenset({CONFIG_ENV, "DOCKYARD_URL", "DOCKYARD_USERNAME", "DOCKYARD_PASSWORD", "DOCKYARD_CREDENTIALS_FILE"})
_PREFIX = "DOCKYARD_"


def expected_type(field: FieldInfo) -> str:
    """The field's type in words, with its bounds: what an operator must write."""
    text = _type_words(field.annotation)
    bounds = []
    for meta in field.metadata:
        for attr, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if isinstance(meta, getattr(annotated_types, attr.capitalize())):
                bounds.append(f"{sign} {getattr(meta, attr)}")
    return f"{text} {' and '.join(bounds)}" if bounds else text


def _type_words(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _type_words(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        words = " or ".join(_type_words(a) for a in args)
        return f"{words} (or unset)" if len(args) < len(typing.get_args(annotation)) else words
    if origin is list:
        (item,) = typing.get_args(annotation) or (str,)
        return f"a list of {_plural(_type_words(item))} (env: JSON list or comma-separated)"
    names = {bool: "a boolean (true/false)", int: "an integer", float: "a number", str: "a string", Path: "a path"}
    if annotation in names:
        return names[annotation]
    return getattr(annotation, "__name__", str(annotation)).replace("SecretStr", "a string (secret)")


def _plural(words: str) -> str:
    """'a string' → 'strings', 'an integer >= 1' → 'integers >= 1': the items of a list."""
    for article in ("a ", "an "):
        if words.startswith(article):
            noun, _, rest = words[len(article):].partition(" ")
            return f"{noun}s {rest}".rstrip()
    return words


def _closest(name: str) -> str | None:
    close = difflib.get_close_matches(name.lower(), list(Settings.model_fields), n=1, cutoff=0.6)
    return close[0] if close else None


def suggestion(name: str) -> str:
    close = _closest(name)
    return f" (did you mean {close!r}?)" if close else ""


def read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ValueError(f"settings file not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ValueError(f"{path} is a directory, not a settings file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path} is not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc}") from exc
    except OSError as exc:  # unreadable (permissions), a broken device, ...
        raise ValueError(f"cannot read settings file {path}: {exc.strerror or exc}") from exc


def check(file_values: Mapping[str, Any], environ: Mapping[str, str], source: str) -> tuple[Settings | None, list[str]]:
    """Validate file values plus the DOCKYARD_* environment as `dockyard serve` would merge them.

    Returns the settings (None when invalid) and one line per problem, unknown keys first, in file order."""
    fields = Settings.model_fields
    problems = []
    for key, value in file_values.items():
        if key not in fields:
            table = " (a table: settings are top-level keys)" if isinstance(value, dict) else ""
            problems.append(f"{source}: unknown key {key!r}{table}{suggestion(key)}")
    env_values = {}
    for var, value in environ.items():
        if not var.startswith(_PREFIX) or var in CLIENT_ENV:
            continue
        name = var[len(_PREFIX):].lower()
        if name in fields:
            env_values[name] = value
        else:
            close = _closest(name)
            problems.append(f"environment: unknown variable {var}"
                            + (f" (did you mean DOCKYARD_{close.upper()}?)" if close else ""))
    known = {k: v for k, v in file_values.items() if k in fields}
    origin = {**{k: source for k in known}, **{k: f"environment DOCKYARD_{k.upper()}" for k in env_values}}
    order = list(origin)
    try:
        settings = Settings(**{**known, **env_values})
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: order.index(e["loc"][0]) if e.get("loc") and e["loc"][0] in origin else len(order))
        return None, problems + [_describe(error, origin, fields) for error in errors]
    return (None, problems) if problems else (settings, [])


def _describe(error: Mapping[str, Any], origin: Mapping[str, str], fields: Mapping[str, FieldInfo]) -> str:
    loc = error.get("loc") or ()
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    key = str(loc[0]) if loc else ""
    if key not in fields:  # a rule across settings (e.g. public_url when not on loopback)
        return message
    where = origin.get(key, "default")
    value = error.get("input")
    secret = key == "database_url" or any(word in key for word in ("password", "secret", "token"))
    shown = "" if secret or isinstance(value, dict) else f" = {value!r}"
    if error.get("type") in ("value_error", "assertion_error"):
        # A validator refused a value of the right type: its reason leads ("expected a string" would be false).
        return f"{where}: {message}" if message.startswith(key) else f"{where}: {key}{shown}: {message}"
    return f"{where}: {key}{shown}: expected {expected_type(fields[key])} ({message})"


def check_config(
    file: Annotated[
        Optional[Path],
        typer.Argument(show_default=False, help=f"Settings file (TOML); default: ${CONFIG_ENV}, else only the environment."),
    ] = None,
) -> None:
    """Validate a settings file and the DOCKYARD_* environment; exit 2 naming each wrong key."""
    path = file or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    try:
        file_values = read_file(path) if path else {}
    except ValueError as exc:
        console.print(f"[red]invalid settings:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    settings, problems = check(file_values, os.environ, str(path) if path else "settings")
    if settings is not None:
        from dockyard.cli.tls_serve import tls_files_problem

        if tls := tls_files_problem(settings):  # what serve checks before it starts (a setting's value is fine, its file not)
            settings, problems = None, [tls]
    if settings is None:
        for line in problems:
            console.print(f"[red]invalid settings:[/red] {escape(line)}", soft_wrap=True)
        raise typer.Exit(2)
    env_count = sum(1 for v in os.environ if v.startswith(_PREFIX) and v[len(_PREFIX):].lower() in Settings.model_fields)
    typer.echo(
        f"{path or 'no settings file'}: valid ({len(file_values)} key(s) in the file, {env_count} from DOCKYARD_* "
        f"variables; would serve on {settings.host}:{settings.port}, database: {database_label(settings)}, "
        f"storage: {settings.storage_driver})"
    )


def register(app: typer.Typer, admin: typer.Typer) -> None:
    app.command("check-config")(check_config)
