"""Freed memory handed back to the system (``bridge/memory.py``): the real ``malloc_trim`` returns pages
a fragmented heap keeps, the trimmer counts what it returned, and a failed round is survived."""

from __future__ import annotations

import asyncio
import gc

import pytest
from harness import IN_CI, RunningBridge
from prometheus_client import CollectorRegistry

from bridge.memory import MemoryTrimmer, Trim, glibc_malloc_trim, rss_bytes
from bridge.metrics import BridgeMetrics


@pytest.fixture
def malloc_trim() -> Trim:
    """glibc's ``malloc_trim``: skipped where the C library has none (the bridge runs without it
    there), a failure in CI (Debian), where the bridge's memory would creep again unnoticed."""
    trim = glibc_malloc_trim()
    if trim is None:
        if IN_CI:
            pytest.fail("malloc_trim not found; CI runs on glibc")
        pytest.skip("malloc_trim is glibc's; the bridge runs without it elsewhere")
    return trim


def returned(registry: CollectorRegistry) -> float:
    return registry.get_sample_value("telecare_memory_returned_bytes_total") or 0.0


def fragment_the_heap() -> list[bytes]:
    """Fill the C heap with 2 KB blocks (above Python's 512-byte small-object limit, so from malloc),
    then free all but every 64th: about 190 MB free inside the heap, pinned by the survivors."""
    blocks = [bytes(2048) for _ in range(100_000)]
    keep = blocks[::64]
    del blocks
    gc.collect()
    return keep


async def test_a_trim_hands_back_a_fragmented_heaps_free_pages(malloc_trim: Trim) -> None:
    metrics = BridgeMetrics("test")
    keep = fragment_the_heap()
    before = rss_bytes()
    assert before > 0
    released = await MemoryTrimmer(metrics, malloc_trim).trim_once()
    assert released > 50_000_000, f"only {released / 1e6:.1f} MB of about 190 MB free came back"
    assert rss_bytes() < before - 50_000_000
    assert returned(metrics.registry) == released
    assert len(keep) == 1563  # the survivors are still there


async def test_the_trimmer_trims_every_interval_and_survives_a_failed_round() -> None:
    metrics = BridgeMetrics("test")
    calls: list[int] = []
    rounds = 0

    def trim(pad: int) -> int:
        calls.append(pad)
        if len(calls) == 2:
            raise OSError("injected: the trim failed")
        return 1

    async def sleep(seconds: float) -> None:
        nonlocal rounds
        assert seconds == 60.0
        rounds += 1
        if rounds > 3:
            raise asyncio.CancelledError  # the bridge stops the loop

    with pytest.raises(asyncio.CancelledError):
        await MemoryTrimmer(metrics, trim, sleep=sleep).run()
    assert calls == [0, 0, 0], "a trim each round, the failed one included, and the loop went on"
    assert metrics.registry.get_sample_value("telecare_loop_errors_total", {"loop": "memory-trim"}) == 1


async def test_a_running_bridge_trims_its_memory(malloc_trim: Trim, embedded_bridge: RunningBridge) -> None:
    """The bridge runs the trimmer among its loops, and exports what it returned."""
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert "memory-trim" in names
    text = await (await embedded_bridge.session.get(f"{embedded_bridge.url}/metrics")).text()
    assert "telecare_memory_returned_bytes_total" in text
