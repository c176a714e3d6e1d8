"""Parsers: the text of a flag, an EMBER_* variable or an inventory value -> a value.

Each raises ValueError with a message that quotes the text and says what was expected; the
caller puts the flag, variable or file and key in front of it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from toolkit.errors import ConfigError

_WHOLE = re.compile(r"\s*[-+]?[0-9]+\s*")
_USER = re.compile(r"[a-z_][a-z0-9_-]*[$]?")
_IDENT = re.compile(r"[A-Za-z0-9_.-]+")
_MEMORY = re.compile(r"^\s*(\d+)\s*([kmgt])b?\s*$", re.IGNORECASE)
_UNIT_MB = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def whole_number(low: int, high: int, note: str = "") -> Callable[[str], int]:
    """A parser for whole numbers from ``low`` to ``high``; ``note`` follows the range."""
    def parse(text: str) -> int:
        if not _WHOLE.fullmatch(text) or not low <= int(text) <= high:
            raise ValueError(f"{text!r} is not a whole number from {low} to {high}{note}")
        return int(text)
    return parse


def port(text: str) -> int:
    """0-65535, where 0 asks for any free port."""
    if not _WHOLE.fullmatch(text) or not 0 <= int(text) < 65536:
        raise ValueError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def fixed_port(text: str) -> int:
    """1-65535: a port that others are told, so never 0 (any free port)."""
    if not _WHOLE.fullmatch(text) or not 0 < int(text) < 65536:
        raise ValueError(f"{text!r} is not a port number (1-65535)")
    return int(text)


def servers(text: str) -> tuple[tuple[str, int, int], ...]:
    """A ZooKeeper ensemble, in order of server number: ``HOST:PEER:ELECTION[,...]``."""
    found = []
    for part in text.split(","):
        host, _, ports = part.strip().partition(":")
        peer, _, election = ports.partition(":")
        try:
            found.append((one_line(host), fixed_port(peer), fixed_port(election)))
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not HOST:PEER_PORT:ELECTION_PORT") from None
    if len(found) % 2 == 0:
        raise ValueError(f"{text!r} lists {len(found)} servers: an ensemble needs an odd "
                         "number (1, 3, 5...), or a split can leave no majority")
    return tuple(found)


def positive_int(text: str) -> int:
    if not _WHOLE.fullmatch(text) or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(text)


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{text!r} must be more than 0 seconds")
    return value


def seconds_or_off(text: str) -> float:
    """Seconds, or 0 for off."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{text!r} is not a number of seconds (0: off)")
    return value


def parse_memory_mb(text: str, what: str = "memory") -> int:
    """Spark-style memory string (``512m``, ``2g``, ``1t``, ``1048576k``) -> MiB.

    A bare number is refused: Spark reads it as bytes, a classic way to give a worker 0 MiB.
    """
    match = _MEMORY.match(text)
    if not match:
        if text.strip().isdigit():
            raise ConfigError(f"{what} {text!r} has no unit: add m or g, as in {text.strip()}m")
        raise ConfigError(f"{what} {text!r} is not a memory size like 512m or 2g")
    mb = int(int(match.group(1)) * _UNIT_MB[match.group(2).lower()])
    if mb < 1:
        raise ConfigError(f"{what} {text!r} is less than 1 MiB")
    return mb


def memory(text: str) -> int:
    try:
        return parse_memory_mb(text)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("memory ")) from None


def choice(*options: str) -> Callable[[str], str]:
    """A parser that accepts one of ``options``."""
    def parse(text: str) -> str:
        if text.strip() not in options:
            raise ValueError(f"{text!r} is not one of {', '.join(options)}")
        return text.strip()
    return parse


def one_line(text: str) -> str:
    """A non-empty text without line breaks or NULs: an address, a name, a path."""
    if not text:
        raise ValueError("'' is empty")
    if "\0" in text or len(text.splitlines()) > 1 or text.splitlines()[0] != text:
        raise ValueError(f"{text!r} is not one line of text")  # any break splitlines sees
    return text


def path(text: str) -> Path:
    return Path(one_line(text))


def user_name(text: str) -> str:
    if not _USER.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a user or group name")
    return text.strip()


def ident(text: str) -> str:
    if not _IDENT.fullmatch(text):
        raise ValueError(f"{text!r} may hold only letters, digits, . _ -")
    return text


def present(text: str) -> bool:
    """Any value at all means yes (EMBER_NO_DAEMONIZE=1, as SPARK_NO_DAEMONIZE)."""
    return True
