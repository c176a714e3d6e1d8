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
    old_driver = make(tmp_path / "driver-20261201000000-0001", 100)
    old_app = make(tmp_path / "app-20261201000000-0001", 100)
    recent = make(tmp_path / "driver-20261201000000-0002", 1)
    active = make(tmp_path / "app-20261201000000-0002", 100)
    foreign = make(tmp_path / "data", 100)
    lookalike = make(tmp_path / "app-data", 100)
    touched = make(tmp_path / "app-20261201000000-0003", 100)
    (touched / "0").mkdir()
    (touched / "0" / "stderr").write_text("still written")

    removed = clean_work_dir(tmp_path, {"app-20261201000000-0002"}, ttl=50, now=time.time())

    assert sorted(removed) == sorted([old_driver, old_app])
    assert not old_driver.exists() and not old_app.exists()
    assert recent.exists() and active.exists() and foreign.exists() and touched.exists()
    assert lookalike.exists()  # app-*, but not an id: someone else's


def test_a_missing_work_dir_is_not_an_error(tmp_path: Path) -> None:
    assert clean_work_dir(tmp_path / "nope", set(), ttl=1, now=time.time()) == []
