"""A fresh bucket per test on the session's SeaweedFS (``s3_server``, tests/conftest.py)."""

from __future__ import annotations

import uuid

import pytest

from tests.fixtures.seaweed import SeaweedServer


@pytest.fixture
def bucket(s3_server: SeaweedServer) -> str:
    """A new, empty bucket on the session server."""
    return s3_server.create_bucket(f"t-{uuid.uuid4().hex[:12]}")
