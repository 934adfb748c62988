"""The intake's lanes (``GroupCommitter`` with a help store of its own, as on PostgreSQL): calls for help
that come on their own go straight to the help store; mixed with others they are taken out and stored
there first; a help store that cannot commit means no ack (StoreUnavailable), never a lost event."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from alarm_centre.alerts.intake import INLINE_AFTER, GroupCommitter, IngestResult, StoreUnavailable
from alarm_centre.store.sqlite import SqliteStore
from devices.events import DeviceEvent
from devices.vocabulary import EventType


def event(device_id: str, kind: str) -> DeviceEvent:
    return DeviceEvent(device_id, uuid.uuid4().hex[:12], EventType(kind), received_at=datetime.now(UTC))


class HelpStore:
    """The help lane: the real store, noting each batch it is given (and failing when told to)."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.batches: list[list[str]] = []
        self.failing = False

    async def ingest(self, events: Sequence[DeviceEvent]) -> list[IngestResult]:
        self.batches.append([e.event_id for e in events])
        if self.failing:
            raise OSError("injected: the lane's connection is gone")
        return await self.store.ingest(events)


async def test_calls_for_help_go_to_their_own_store(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db") as store:
        lane = HelpStore(store)
        async with GroupCommitter(store, help_alongside=True, help_store=lane) as intake:
            fall = event("u1", "fall")
            [alone] = await intake.submit_many([fall])
            assert isinstance(alone, IngestResult) and alone.result == "accepted"
            assert lane.batches == [[fall.event_id]], "straight to the help store"
            flood = [event(f"t{n}", "mains_fail") for n in range(3)]
            pendant = event("u2", "pendant")
            mixed = await intake.submit_many([*flood[:2], pendant, flood[2]])
            assert all(isinstance(r, IngestResult) and r.result == "accepted" for r in mixed)
            assert lane.batches[-1] == [pendant.event_id], "taken out of the flood, to the help store"
            assert all(pendant.event_id not in b or len(b) == 1 for b in lane.batches)
        assert await store.event_count() == 5


async def test_a_help_store_that_cannot_commit_means_no_ack(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "s.db") as store:
        lane = HelpStore(store)
        async with GroupCommitter(store, help_alongside=True, help_store=lane) as intake:
            lane.failing = True
            outcomes = await intake.submit_many([event("u1", "fall"), event("u2", "smoke")])
            assert all(isinstance(o, StoreUnavailable) for o in outcomes)
            lane.failing = False
            [again] = await intake.submit_many([event("u1", "fall")])
            assert isinstance(again, IngestResult) and again.result == "accepted"
        assert await store.event_count() == 1


async def test_steady_small_batches_of_others_are_stored_without_the_lane(tmp_path: Path) -> None:
    """PostgreSQL's steady traffic: once batches of others have been small for INLINE_AFTER batches in a
    row, the next small one is stored on the intake's own store (the bridge's loop); a flood's batch
    goes to the others' lane, and the count starts again."""
    async with SqliteStore(tmp_path / "s.db") as store:
        lane = HelpStore(store)  # here: the others' lane, noting what it is given
        async with GroupCommitter(
            store, help_alongside=True, other_store=lane, inline_others=2, max_other_batch=50
        ) as intake:
            steady = [event(f"u{n}", "heartbeat") for n in range(INLINE_AFTER + 3)]
            for ev in steady:  # one at a time: a batch each
                [result] = await intake.submit_many([ev])
                assert isinstance(result, IngestResult) and result.result == "accepted"
            assert lane.batches == [[ev.event_id] for ev in steady[:INLINE_AFTER]]
            flood = [event(f"t{n}", "mains_fail") for n in range(10)]
            outcomes = await intake.submit_many(flood)
            assert all(isinstance(r, IngestResult) and r.result == "accepted" for r in outcomes)
            assert lane.batches[-1] == [ev.event_id for ev in flood]
            after = event("u-after", "heartbeat")
            await intake.submit_many([after])
            assert lane.batches[-1] == [after.event_id], "after a flood, small batches use the lane again"
        assert await store.event_count() == len(steady) + len(flood) + 1
