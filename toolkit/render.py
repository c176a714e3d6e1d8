"""One jinja2 Environment over ``templates/``: StrictUndefined, trailing newlines kept."""

from __future__ import annotations

import functools
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import jinja2

from toolkit.base.envfile import shell_quote
from toolkit.errors import ConfigError


def templates_dir() -> Path:
    """The repository's templates/, or the copy a wheel installs under <prefix>/share/ember."""
    for candidate in (Path(__file__).resolve().parent.parent / "templates",
                      Path(sys.prefix) / "share" / "ember" / "templates"):
        if candidate.is_dir():
            return candidate
    raise ConfigError("Ember's templates/ directory is missing from this installation")


def supervisor_escape(value: object) -> str:
    """Supervisor expands %(name)s in its config values; a literal % is written %%."""
    return single_line(value, "value").replace("%", "%%")


def supervisor_command(argv: list[str]) -> str:
    """A command line for supervisor's ``command=``, which its INI parser cuts at an inline
    comment: whitespace then ``;`` or ``#``. shlex quoting puts such a pair inside single
    quotes only; closing and reopening the quote there (``' '';'``) keeps the same word and
    leaves no whitespace before the mark."""
    line = shlex.join(argv)
    return re.sub(r"(\s)([;#])", r"\1''\2", line)


_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def single_line(value: object, what: str) -> str:
    """Refuse line breaks in values written into INI-style files: they would add lines."""
    text = str(value)
    if "\n" in text or "\r" in text:
        raise ConfigError(f"{what} {text!r} contains a line break")
    return text


def supervisor_env(env: dict[str, str]) -> str:
    """``KEY="value",...`` for a supervisor ``environment=`` line.

    supervisor splits this line with a non-POSIX shlex (quotes group, nothing escapes), then
    strips quote characters from both ends of each value. So each value is wrapped in whichever
    quote it does not contain; one holding both, or starting or ending with a quote, is refused.
    """
    def quote(key: str, value: str) -> str:
        if not _ENV_KEY.fullmatch(key):
            raise ConfigError(f"environment name {key!r} is not a variable name (letters, "
                              f"digits and _, not starting with a digit)")
        single_line(value, f"environment value of {key}")
        if re.search(r"\s[;#]", value):
            raise ConfigError(f"environment value of {key} holds whitespace then ; or #, "
                              f"which supervisor would take for a comment: {value!r}")
        if value[:1] in ("'", '"') or value[-1:] in ("'", '"'):
            raise ConfigError(f"environment value of {key} starts or ends with a quote, which "
                              f"supervisor would drop: {value!r}")
        for mark in ('"', "'"):
            if mark not in value:
                return mark + supervisor_escape(value) + mark
        raise ConfigError(f"environment value of {key} holds both kinds of quote: {value!r}")
    return ",".join(f"{key}={quote(key, value)}" for key, value in sorted(env.items()))


INSTANCE = "\0i"
"""Stands for the instance in names rendered into a unit template; written as ``%i``."""


def systemd_word(value: object) -> str:
    """One word of a unit file setting (a path, an ExecStart= argument): ``%`` escaped as
    ``%%`` and ``$`` as ``$$`` (systemd expands both), quoted when it holds a space or quote.
    INSTANCE (a NUL and an ``i``, which no real value holds) becomes ``%i``."""
    text = single_line(value, "systemd value").replace("%", "%%").replace(INSTANCE, "%i")
    text = text.replace("$", "$$")
    if any(c in text for c in " \t\"'\\"):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def systemd_path(value: object) -> str:
    """A path in a setting that takes one unquoted path (PIDFile=, WorkingDirectory=)."""
    text = single_line(value, "path")
    if not text.startswith("/") or any(c.isspace() or c in "\"'\\" for c in text):
        raise ConfigError(f"path {text!r} cannot go in a systemd unit: it must be absolute, "
                          f"without spaces, quotes or backslashes")
    return text.replace("%", "%%").replace(INSTANCE, "%i")


def systemd_seconds(value: float) -> str:
    """Seconds as systemd reads them: ``1000000``, ``2.5``, never ``1e+06`` (refused there,
    and its default taken silently)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def systemd_env(env: dict[str, str]) -> str:
    """An EnvironmentFile= body: ``KEY="value"`` lines, no expansion happens there."""
    lines = []
    for key, value in sorted(env.items()):
        if not _ENV_KEY.fullmatch(key):
            raise ConfigError(f"environment name {key!r} is not a variable name (letters, "
                              f"digits and _, not starting with a digit)")
        single_line(value, f"environment value of {key}")
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        lines.append(f'{key}="{escaped}"')
    return "\n".join(lines) + "\n"


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["shq"] = shell_quote
    env.filters["sv"] = supervisor_escape
    env.filters["svenv"] = supervisor_env
    env.filters["svcommand"] = supervisor_command
    env.filters["sdword"] = systemd_word
    env.filters["sdpath"] = systemd_path
    env.filters["sdseconds"] = systemd_seconds
    return env


def render(template: str, /, **values: Any) -> str:
    try:
        return environment().get_template(template).render(**values)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"template {template}: {exc.message}") from None
