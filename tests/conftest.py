from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Cluster, cluster_in
from tests.skips import pytest_make_collect_report, pytest_runtest_makereport

pytest_plugins = ("pytester",)
__all__ = ["pytest_make_collect_report", "pytest_runtest_makereport"]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with cluster_in(tmp_path) as running:
        yield running
