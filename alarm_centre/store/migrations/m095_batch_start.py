"""PostgreSQL only: the start of a batch of device events in one round trip (``store/pg_batch.py``).

``telecare_start_batch_v1`` does, in order, what :func:`alarm_centre.store.pg_batch.start` did in four
to six statements: claim each unit's advisory lock (waiting, or noting the units another node holds),
record the events under their idempotency keys, find the alert each earlier copy joined, read the units
of the new events as they were, mark the active ones seen, and lock the open alerts of the keys the
caller could name before reading any unit (every key but a call for help's, which follows the
resident). Each statement inside sees what committed before it ran (READ COMMITTED, a volatile
function), so everything after the claim sees the other nodes' last writes of those units, as separate
statements did.

The name carries a version: a later change is a new function beside this one, so nodes of two
releases can share a database during a rolling upgrade. SQLite stores a batch on the bridge's own
connection, where a statement costs no round trip: it has nothing to add.
"""

from __future__ import annotations

POSTGRESQL = """
CREATE FUNCTION telecare_start_batch_v1(
    lock_space integer, wait boolean, units text[],
    e_dev text[], e_id text[], e_type text[], e_ts double precision[], e_received double precision[],
    e_source text[], e_test integer[], e_data text[], open_keys text[],
    OUT busy text[], OUT new_dev text[], OUT new_id text[],
    OUT earlier_dev text[], OUT earlier_id text[], OUT earlier_alert bigint[],
    OUT units_read devices[], OUT open_alerts alerts[]
) LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF wait THEN
        PERFORM pg_advisory_xact_lock(lock_space, hashtext(u))
        FROM (SELECT u FROM unnest(units) AS u ORDER BY u) AS ordered;
        busy := '{}';
    ELSE
        SELECT coalesce(array_agg(t.u), '{}') INTO busy
        FROM (SELECT u, pg_try_advisory_xact_lock(lock_space, hashtext(u)) AS ok
              FROM (SELECT u FROM unnest(units) AS u ORDER BY u) AS ordered) AS t
        WHERE NOT t.ok;
    END IF;

    WITH inserted AS (
        INSERT INTO events (device_id, event_id, type, ts, received_at, source, test, data)
        SELECT x.d, x.i, x.t, x.ts, x.r, x.s, x.te, x.da
        FROM unnest(e_dev, e_id, e_type, e_ts, e_received, e_source, e_test, e_data)
            WITH ORDINALITY AS x(d, i, t, ts, r, s, te, da, n)
        WHERE x.d <> ALL(busy)
        ORDER BY x.n
        ON CONFLICT (device_id, event_id) DO NOTHING
        RETURNING device_id, event_id
    )
    SELECT coalesce(array_agg(device_id), '{}'), coalesce(array_agg(event_id), '{}')
    INTO new_dev, new_id FROM inserted;

    earlier_dev := '{}';
    earlier_id := '{}';
    earlier_alert := '{}';
    IF cardinality(new_dev) < (SELECT count(*) FROM unnest(e_dev) AS d WHERE d <> ALL(busy)) THEN
        SELECT coalesce(array_agg(e.device_id), '{}'), coalesce(array_agg(e.event_id), '{}'),
               coalesce(array_agg(e.alert_id), '{}')
        INTO earlier_dev, earlier_id, earlier_alert
        FROM unnest(e_dev, e_id) AS k(d, i)
        JOIN events AS e ON e.device_id = k.d AND e.event_id = k.i
        WHERE k.d <> ALL(busy)
          AND NOT EXISTS (SELECT 1 FROM unnest(new_dev, new_id) AS nw(d, i) WHERE nw.d = k.d AND nw.i = k.i);
    END IF;

    SELECT coalesce(array_agg(dv ORDER BY dv.id), '{}') INTO units_read
    FROM devices AS dv WHERE dv.id = ANY(new_dev);

    -- Each unit's first new event marks it seen (as one by one would).
    UPDATE devices AS dv SET last_seen_at = s.at, online = 1
    FROM (
        SELECT DISTINCT ON (x.d) x.d, x.r AS at
        FROM unnest(e_dev, e_id, e_received) WITH ORDINALITY AS x(d, i, r, n)
        JOIN unnest(new_dev, new_id) AS nw(d, i) ON nw.d = x.d AND nw.i = x.i
        ORDER BY x.d, x.n
    ) AS s
    WHERE dv.id = s.d AND dv.status = 'active';

    SELECT coalesce(array_agg(locked.a ORDER BY (locked.a).id), '{}') INTO open_alerts
    FROM (SELECT al AS a FROM alerts AS al WHERE al.open_key = ANY(open_keys) ORDER BY al.id FOR UPDATE)
        AS locked;
END
$$
"""

MIGRATIONS: list[tuple[int, dict[str, str]]] = [(95, {"postgresql": POSTGRESQL})]
