from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import Cluster, cluster_in


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with cluster_in(tmp_path) as running:
        yield running
