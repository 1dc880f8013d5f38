"""Production tests (``-m prod``): the deployment as shipped (ACL, owned keys, TLS, secrets, metrics,
operator commands, compose and systemd files, upgrades, Redis Cluster) and a smoke run of the
benchmarks."""
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    # Called with every collected item, from every folder: mark only this folder's.
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.prod)
