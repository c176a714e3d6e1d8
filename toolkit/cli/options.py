"""Values of flags and EMBER_* variables: parsed, with errors that name the flag or variable."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from toolkit.errors import ConfigError

T = TypeVar("T")


def port(text: str) -> int:
    if not text.strip().isdigit() or not 0 <= int(text) < 65536:
        raise ValueError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def positive_int(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise ValueError(f"{text!r} must be more than 0 seconds")
    return value


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


def seconds_or_off(text: str) -> float:
    return 0.0 if text.strip() in ("0", "0.0") else seconds(text)
