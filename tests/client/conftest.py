"""One `vaultctl serve --dev` process on port 0 per module, for the Python client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dev_server import DevServer, dev_server


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[DevServer]:
    with dev_server(tmp_path_factory.mktemp("client")) as running:
        yield running
