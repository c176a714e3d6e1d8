"""Work directory cleanup: finished driver and application directories older than a TTL go.

Spark's worker cleanup is off by default before 4.0 and users report work dirs filling disks;
Ember's is on by default. A directory is old when no file in it changed within the TTL.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

from toolkit.settings import default_of

logger = logging.getLogger(__name__)

EMBER_ID = re.compile(r"(driver|app)-\d{14}-\d{4,}")
"""What the master's driver and application ids look like: the only names of the work dir
that are Ember's (anything else there is someone else's, whatever its name)."""
CLEANUP_INTERVAL: float = default_of("worker", "cleanup_interval")
CLEANUP_TTL: float = default_of("worker", "cleanup_ttl")


def newest_change(directory: Path) -> float:
    """The latest mtime of the directory or anything below it."""
    newest = directory.stat().st_mtime
    for root, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                continue
    return newest


def clean_work_dir(work_dir: Path, active: set[str], ttl: float, now: float) -> list[Path]:
    """Remove Ember's driver and application dirs (named by their ids) not in ``active`` and
    unchanged for ``ttl`` seconds.

    Anything else in the work dir is left alone: it is not Ember's. Returns what was removed.
    """
    removed: list[Path] = []
    try:
        entries = list(work_dir.iterdir())
    except OSError as exc:
        logger.warning("Cannot list work dir %s: %s", work_dir, exc.strerror)
        return removed
    for entry in entries:
        if entry.name in active or not EMBER_ID.fullmatch(entry.name):
            continue
        try:
            if entry.is_symlink() or not entry.is_dir() or now - newest_change(entry) < ttl:
                continue
            shutil.rmtree(entry)
        except OSError as exc:
            logger.warning("Cannot remove old work dir %s: %s", entry, exc.strerror or exc)
            continue
        logger.info("Removed old work dir %s", entry)
        removed.append(entry)
    return removed
