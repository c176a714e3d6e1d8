"""Read ``ember-env.sh`` without executing it.

The file holds shell assignments: ``KEY=value`` or ``export KEY=value``, ``#`` comments and blank
lines. Values may be bare words, 'single-quoted' (literal) or "double-quoted" (``\\"``, ``\\\\``,
``\\$`` escapes), may start with ``~/`` (the home directory), and may refer to the environment or
earlier keys as ``$NAME`` or ``${NAME}`` (unquoted or double-quoted; the environment wins, as it
does for the values themselves). Anything else, command substitution included, is an error
that names the file and line: nothing in the file is ever run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from toolkit.errors import ConfigError

_ASSIGN = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$")
_VAR = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


def parse_env_file(path: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Return the file's assignments in order; refer to ``environ`` for unset names."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _ASSIGN.match(line)
        if not match:
            raise ConfigError(f"{path} line {number}: expected KEY=value, got {raw.strip()!r}")
        key, rest = match.groups()
        scope = {**values, **environ}
        if rest == "~" or rest.startswith("~/"):
            rest = scope.get("HOME", "~").replace("\\", "\\\\") + rest[1:]
        try:
            values[key] = _value(rest, scope)
        except ValueError as exc:
            raise ConfigError(f"{path} line {number}: {exc}") from None
    return values


def _value(text: str, scope: Mapping[str, str]) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            if text[i:].strip() and not text[i:].strip().startswith("#"):
                raise ValueError("unquoted space in value; put the value in quotes")
            break
        if char == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError("unterminated single quote")
            out.append(text[i + 1:end])
            i = end + 1
        elif char == '"':
            i = _double_quoted(text, i + 1, scope, out)
        elif char == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif char == "`" or text.startswith("$(", i):
            raise ValueError("command substitution is not supported")
        elif char in ";&|<>(){}":
            raise ValueError(f"{char!r} is not allowed here; quote the value")
        elif char == "$":
            i = _expand(text, i, scope, out)
        else:
            out.append(char)
            i += 1
    return "".join(out)


def _double_quoted(text: str, i: int, scope: Mapping[str, str], out: list[str]) -> int:
    while i < len(text):
        char = text[i]
        if char == '"':
            return i + 1
        if char == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$`':
            out.append(text[i + 1])
            i += 2
        elif char == "`" or text.startswith("$(", i):
            raise ValueError("command substitution is not supported")
        elif char == "$":
            i = _expand(text, i, scope, out)
        else:
            out.append(char)
            i += 1
    raise ValueError("unterminated double quote")


def _expand(text: str, i: int, scope: Mapping[str, str], out: list[str]) -> int:
    match = _VAR.match(text, i)
    if not match:
        if text.startswith("${", i):
            raise ValueError("only ${NAME} expansions are supported")
        out.append("$")
        return i + 1
    out.append(scope.get(match.group(1) or match.group(2), ""))
    return match.end()


def shell_quote(value: str) -> str:
    """Quote a value so that both this parser and a shell read it back unchanged."""
    if value and re.fullmatch(r"[A-Za-z0-9_@%+=:,./-]+", value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"
