"""Shared pytest configuration: async tests run on asyncio only (``@pytest.mark.anyio``)."""

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
