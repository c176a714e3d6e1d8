"""One jinja2 Environment over ``templates/``: StrictUndefined, trailing newlines kept."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

import jinja2

from toolkit.daemon.envfile import shell_quote
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
        single_line(value, f"environment value of {key}")
        if value[:1] in ("'", '"') or value[-1:] in ("'", '"'):
            raise ConfigError(f"environment value of {key} starts or ends with a quote, which "
                              f"supervisor would drop: {value!r}")
        for mark in ('"', "'"):
            if mark not in value:
                return mark + supervisor_escape(value) + mark
        raise ConfigError(f"environment value of {key} holds both kinds of quote: {value!r}")
    return ",".join(f"{key}={quote(key, value)}" for key, value in sorted(env.items()))


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(templates_dir()),
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True, autoescape=False)
    env.filters["shq"] = shell_quote
    env.filters["sv"] = supervisor_escape
    env.filters["svenv"] = supervisor_env
    return env


def render(template: str, /, **values: Any) -> str:
    try:
        return environment().get_template(template).render(**values)
    except jinja2.UndefinedError as exc:
        raise ConfigError(f"template {template}: {exc.message}") from None
