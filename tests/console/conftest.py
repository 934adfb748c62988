"""Fixtures for the console's browser tests: Debian's Chromium through Playwright (see browser_support)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from browser_support import chromium


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with chromium() as launched:
        yield launched
