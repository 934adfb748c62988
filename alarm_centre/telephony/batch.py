"""Group commit for the call webhooks: the small transactions of webhooks that arrive together are run in one
write transaction, each under a savepoint of its own, and committed with one fsync.

Fifty calls at once post hundreds of webhooks a second (a call in, participants joining and leaving, the
conference ending, the recording). Each is a short transaction, and on SQLite every commit waits for its
own fsync, one after another: the 50th waits for 49. Run together, they wait for one. A work that fails is
rolled back to its savepoint and fails alone (its changes are not published); the others commit. If the
commit itself fails, every work of the batch fails (none was stored), as it would have alone.

The same design as the intake's group commit for device events (``alarm_centre/alerts/intake.py``), for
arbitrary work: ``await batcher.run(work)`` instead of ``await store.transaction(work)``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Self, TypeVar

from alarm_centre.store.base import AlertStore
from alarm_centre.store.tx import PostCommit, Tx, Work
from devices.cancellation import stop

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BATCH = 200


class StoreClosing(RuntimeError):
    """The batcher stopped before the work could be stored (the bridge is shutting down)."""


class TransactionBatcher:
    """Runs works that arrive together in one transaction; an async context manager (its worker task)."""

    def __init__(self, store: AlertStore, *, max_batch: int = MAX_BATCH) -> None:
        self.store = store
        self.max_batch = max_batch
        self._pending: list[tuple[Work[Any], asyncio.Future[Any]]] = []
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        #: Batches committed and works in them (the bench and tests read them).
        self.batches = 0
        self.works = 0

    async def __aenter__(self) -> Self:
        self._worker = asyncio.create_task(self._run(), name="call-webhook-commits")
        return self

    async def __aexit__(self, *exc: object) -> None:
        worker, self._worker = self._worker, None
        await stop(worker)
        pending, self._pending = self._pending, []
        for _, future in pending:
            if not future.done():
                future.set_exception(StoreClosing("the bridge is shutting down"))

    async def run(self, work: Work[T]) -> T:
        """``work(tx, post)`` in a transaction shared with whatever arrives with it; its result."""
        if self._worker is None or self._worker.done():
            result: T = await self.store.transaction(work)
            return result
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((work, future))
        self._wake.set()
        return await future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._commit(batch)

    async def _commit(self, batch: list[tuple[Work[Any], asyncio.Future[Any]]]) -> None:
        outcomes: list[tuple[bool, Any]] = []

        async def together(tx: Tx, post: PostCommit) -> None:
            outcomes.clear()  # a retried transaction starts again
            for n, (work, future) in enumerate(batch):
                if future.done():  # its caller went away (cancelled): nothing to do for it
                    outcomes.append((False, None))
                    continue
                mark = f"w{n}"
                own = PostCommit()
                await tx.savepoint(mark)
                try:
                    value = await work(tx, own)
                except Exception as exc:  # this work fails alone; the batch goes on
                    await tx.rollback_to(mark)
                    await tx.release(mark)
                    outcomes.append((False, exc))
                    continue
                await tx.release(mark)
                post.changes.extend(own.changes)
                post.outbox = post.outbox or own.outbox
                post.users |= own.users
                outcomes.append((True, value))

        try:
            await self.store.transaction(together)
        except Exception as exc:
            log.warning("a batch of %d call webhooks could not be committed: %s", len(batch), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        except BaseException:
            for _, future in batch:
                if not future.done():
                    future.set_exception(StoreClosing("the bridge is shutting down"))
            raise
        self.batches += 1
        self.works += len(batch)
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value if isinstance(value, BaseException) else StoreClosing("cancelled"))
