"""The durable agenda: "this aggregate has something due at T", fired once when the clock
passes T.

The rows live in the service's store (`shared.store`), written with the events that set them,
so nothing is rebuilt at start. A replica claims due rows for a lease, fires each through the
service's `fire` function and releases them; a second replica skips claimed rows, and the
aggregate's own version check refuses a second recording of the same step. Claims left by an
earlier life of the same replica are released when it starts; another replica's expire with
their lease. A firing that raises is tried again after a pause; one that keeps failing is
parked (logged, counted) until its aggregate is saved again, so it cannot fail forever.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

from eventsourcing.persistence import PersistenceError
from prometheus_client import Counter, Gauge

from shared.application import Conflict, ServiceApplication
from shared.clock import Clock
from shared.errors import describe
from shared.runtime import Wakeup

log = logging.getLogger(__name__)

FIRED = Counter("dunwell_agenda_fired_total", "Agenda entries fired", ["kind", "outcome"])
PENDING = Gauge("dunwell_agenda_pending", "Agenda entries in the store")
PARKED = Gauge("dunwell_agenda_parked", "Agenda entries parked after their firing kept failing")

Fire = Callable[[UUID, str, datetime], None]
# Fires several due entries of one kind together (their changes in one transaction, any outside
# calls made together); raises when that cannot be done before anything is recorded or sent,
# and the entries are then fired one by one.
FireMany = Callable[[list[UUID], str, datetime], None]


def wall_now() -> datetime:
    """Leases are measured in real time, whatever the domain's clock says."""
    return datetime.now(UTC)


@dataclass
class Agenda:
    app: ServiceApplication
    fire: Fire
    clock: Clock
    owner: str
    lease: timedelta = timedelta(seconds=60)
    idle_seconds: float = 1.0
    batch: int = 50
    attempts: int = 5  # firings of one entry that may fail before it is parked
    pause: timedelta = timedelta(seconds=2)  # between failed firings of one entry
    on_progress: Callable[[], None] = lambda: None
    wake: Wakeup = field(default_factory=Wakeup)
    concurrency: int = 8  # firings at once (each in a worker thread)
    fire_many: FireMany | None = None  # fires a claim's entries of one kind together

    def __post_init__(self) -> None:
        self.app.on_agenda_change(self.wake.set)
        self._slots = asyncio.Semaphore(self.concurrency)

    async def run(self, stop: asyncio.Event) -> None:
        self.wake.bind()
        released = await asyncio.to_thread(self.app.extras.release_owner, self.owner)
        if released:
            log.info("released %d agenda claims of this replica's earlier run", released)
        while not stop.is_set():
            now = self.clock.now()
            claimed = await asyncio.to_thread(self._claim, now)
            done = await self._fire_together(claimed, stop)
            rest = [(aggregate_id, kind) for aggregate_id, kind in claimed
                    if aggregate_id not in done]
            fired = await asyncio.gather(*(self._fire_in_turn(aggregate_id, kind, stop)
                                           for aggregate_id, kind in rest))
            done += [aggregate_id for aggregate_id in fired if aggregate_id is not None]
            # Released, so what they have due next can be claimed when it falls due.
            await asyncio.to_thread(self.app.extras.release, done, self.owner)
            self.on_progress()
            if len(claimed) < self.batch:
                await self.wake.wait(stop, await asyncio.to_thread(self._idle, now))

    def _claim(self, now: datetime) -> list[tuple[UUID, str]]:
        wall = wall_now()
        claimed = self.app.extras.claim_due(now, self.batch, self.owner, wall + self.lease, wall)
        PENDING.set(self.app.extras.agenda_size())
        return claimed

    def _idle(self, now: datetime) -> float:
        """Seconds to wait: until the next entry falls due, at most `idle_seconds`."""
        upcoming = self.app.extras.next_due()
        if upcoming is None or upcoming <= now:
            return self.idle_seconds
        return min(self.idle_seconds, (upcoming - now).total_seconds())

    async def _failed(self, aggregate_id: UUID, kind: str, error: Exception) -> None:
        """Keep the claim for a pause, then try again; after `attempts` failures, park it."""
        FIRED.labels(kind, "failed").inc()
        failures = await asyncio.to_thread(self.app.extras.failed, aggregate_id, self.owner,
                                           wall_now() + self.pause, self.attempts)
        if failures >= self.attempts:
            PARKED.set(await asyncio.to_thread(self.app.extras.parked))
            log.error("firing %s %s failed %d times (%s): parked until it is saved again",
                      kind, aggregate_id, failures, describe(error))
        else:
            log.warning("firing %s %s failed (%s); attempt %d of %d", kind, aggregate_id,
                        describe(error), failures + 1, self.attempts)

    async def _fire_together(self, claimed: list[tuple[UUID, str]],
                             stop: asyncio.Event) -> list[UUID]:
        """With `fire_many`, each kind's claimed entries in one unit of work: one commit for
        the lot. Should that unit fail (a conflict, one entry's error), none of it is
        recorded, and the entries are fired one by one as without it."""
        if self.fire_many is None or stop.is_set():
            return []
        kinds: dict[str, list[UUID]] = {}
        for aggregate_id, kind in claimed:
            kinds.setdefault(kind, []).append(aggregate_id)
        done: list[UUID] = []
        for kind, ids in kinds.items():
            try:
                await asyncio.to_thread(self.fire_many, ids, kind, self.clock.now())
            except PersistenceError:
                raise  # the store itself: the loop fails and is restarted
            except Exception as error:  # noqa: BLE001 - each is tried again on its own
                log.info("firing %d %s entries together failed (%s); firing them one by one",
                         len(ids), kind, describe(error))
                continue
            FIRED.labels(kind, "fired").inc(len(ids))
            done += ids
        return done

    async def _fire_in_turn(self, aggregate_id: UUID, kind: str,
                            stop: asyncio.Event) -> UUID | None:
        """Fire one claimed entry when a slot is free; its id once it may be released.

        Entries of one claim are distinct aggregates, so up to `concurrency` fire at once:
        a send waits on its provider, not on the sends before it. The clock is read for each
        firing, so a slow batch is never judged (nor recorded) at the time it was claimed.
        """
        async with self._slots:
            if stop.is_set():
                return None
            fired = await self._fire_one(aggregate_id, kind, self.clock.now())
        return aggregate_id if fired else None

    async def _fire_one(self, aggregate_id: UUID, kind: str, now: datetime) -> bool:
        """Fire one claimed entry; False when it stays claimed until its lease runs out."""
        try:
            await asyncio.to_thread(self.fire, aggregate_id, kind, now)
        except Conflict:
            FIRED.labels(kind, "conflict").inc()  # another writer moved it: look again soon
            return True
        except PersistenceError:
            raise  # the store itself: the loop fails and is restarted
        except Exception as error:  # noqa: BLE001 - tried again with backoff, then parked
            await self._failed(aggregate_id, kind, error)
            return False
        FIRED.labels(kind, "fired").inc()
        return True
