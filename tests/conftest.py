import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Cluster, cluster_in
from tests.skips import pytest_make_collect_report, pytest_runtest_makereport

pytest_plugins = ("pytester",)

# The suite runs as root in CI. As root, Ember runs its roles as an unprivileged user (ember,
# made when missing) unless told `root`: the tests that start roles on this machine say root,
# so that they create no user here and run this machine's Python wherever it lives. The
# systemd container's tests (over SSH: they do not inherit this) check the unprivileged user.
os.environ.setdefault("EMBER_RUN_USER", "root")
__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with cluster_in(tmp_path) as running:
        yield running
