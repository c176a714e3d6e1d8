"""Log lines stay lines: control characters in what a log message carries (a driver's or an
application's name, a peer's words) are written escaped, so nobody can forge log lines or
send escape sequences to an operator's terminal through a name."""

from __future__ import annotations

import logging
import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text: str) -> str:
    """``text`` with every control character written as ``\\xNN`` (``\\uNNNN``)."""
    return _CONTROL.sub(lambda found: found.group().encode("unicode_escape").decode(), text)


class PrintableFilter(logging.Filter):
    """Escapes control characters in each record's message (not in its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _CONTROL.search(message):
            record.msg, record.args = printable(message), None
        return True


def install(logger: logging.Logger | None = None) -> None:
    """On every handler of ``logger`` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.addFilter(PrintableFilter())
