from collections.abc import AsyncIterator

import pytest

from tests.interop.foreign import ForeignClient


@pytest.fixture
async def foreign(database_url: str) -> AsyncIterator[ForeignClient]:
    """Another pgmq client on its own connection to the test's database."""
    async with ForeignClient.connect(database_url) as client:
        yield client
