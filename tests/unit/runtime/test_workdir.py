"""Work dir cleanup: what goes and what stays."""

from __future__ import annotations

import os
import time
from pathlib import Path

from toolkit.runtime.workdir import clean_work_dir


def make(path: Path, age: float) -> Path:
    path.mkdir(parents=True)
    (path / "stdout").write_text("x")
    then = time.time() - age
    for item in (path / "stdout", path):
        os.utime(item, (then, then))
    return path


def test_only_old_finished_ember_dirs_are_removed(tmp_path: Path) -> None:
    old_driver = make(tmp_path / "driver-1", 100)
    old_app = make(tmp_path / "app-1", 100)
    recent = make(tmp_path / "driver-2", 1)
    active = make(tmp_path / "app-2", 100)
    foreign = make(tmp_path / "data", 100)
    touched = make(tmp_path / "app-3", 100)
    (touched / "0").mkdir()
    (touched / "0" / "stderr").write_text("still written")

    removed = clean_work_dir(tmp_path, {"app-2"}, ttl=50, now=time.time())

    assert sorted(removed) == sorted([old_driver, old_app])
    assert not old_driver.exists() and not old_app.exists()
    assert recent.exists() and active.exists() and foreign.exists() and touched.exists()


def test_a_missing_work_dir_is_not_an_error(tmp_path: Path) -> None:
    assert clean_work_dir(tmp_path / "nope", set(), ttl=1, now=time.time()) == []
