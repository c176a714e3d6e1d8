"""Values of flags and EMBER_* variables: parsed, with errors that name the flag or variable."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from toolkit.errors import ConfigError
from toolkit.settings import port, positive_int, seconds, seconds_or_off

__all__ = ["port", "positive_int", "resolve", "seconds", "seconds_or_off"]

T = TypeVar("T")


def resolve(flag: str | None, option: str, env: str, parse: Callable[[str], T],
             default: Callable[[], T]) -> T:
    """The flag if given, else the environment variable, else the default; errors name which."""
    if flag is not None:
        source, text = option, flag
    elif os.environ.get(env):
        source, text = env, os.environ[env]
    else:
        return default()
    try:
        return parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
