"""``telecare-bridge privacy reads|export|erase|erasures|retention``: the data-protection officer's commands
(docs/data-protection.md).

They work on the configured store like the other management commands, run as the service's user, and
are recorded as ``{user}@cli``: an export is a read in the audit of reads; an erasure is recorded in
``erasures`` and the registry's log.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bridge.cli.common import EXIT_FAILED, EXIT_USAGE, cli_viewer, config_path, fail, load, open_cli_store

T = TypeVar("T")


def _with_store(args: argparse.Namespace, work: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run ``work(store, config)`` on the configured store; refusals become one clear line."""
    from alarm_centre.store import Conflict, NotFound

    config = load(args)

    async def main() -> T:
        async with open_cli_store(config, config_path(args.config)) as store:
            return await work(store, config)

    try:
        return asyncio.run(main())
    except NotFound as exc:
        fail(str(exc), EXIT_FAILED)
    except Conflict as exc:
        fail(f"refused: {exc}", EXIT_FAILED)


def _time(text: str | None, flag: str) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        fail(f"{flag} must be a time like 2026-05-01T00:00:00Z", EXIT_USAGE)


# -- reads ---------------------------------------------------------------------------------------
def cmd_reads(args: argparse.Namespace) -> None:
    from alarm_centre.privacy.reads import ReadQuery, query_reads, reads_csv

    query = ReadQuery(
        resident_id=args.resident,
        actor=args.actor,
        since=_time(args.since, "--since"),
        until=_time(args.until, "--until"),
        limit=args.limit,
    )
    reads, _ = _with_store(args, lambda store, _: query_reads(store, query))
    if args.format == "csv":
        sys.stdout.write(reads_csv(reads))
    elif args.format == "json":
        print(json.dumps({"reads": reads}, indent=2))
    else:
        for r in reads:
            print(
                f"{r['at']}  {r['actor']} ({r['role']}, {r['source']} {r['address']})  {r['resident_id']}  "
                f"{','.join(r['fields'])}  {r['purpose']}"
            )
        print(f"{len(reads)} read(s)", file=sys.stderr)


# -- subject access ------------------------------------------------------------------------------
def cmd_export(args: argparse.Namespace) -> None:
    from alarm_centre.privacy import disclosure
    from alarm_centre.privacy.need_to_know import ResidentField
    from alarm_centre.privacy.retention import RetentionPolicy
    from alarm_centre.privacy.subject_access import subject_access, summary_markdown
    from bridge.credentials import write_atomically
    from bridge.retention_kinds import RETENTION_KINDS

    who = cli_viewer()

    async def work(store: Any, config: Any) -> dict[str, Any]:
        doc = await subject_access(
            store,
            args.resident,
            requested_by=who.name,
            kinds=RETENTION_KINDS,
            policy=RetentionPolicy(dict(config.retention.days)),
        )
        await disclosure.record(
            store, [disclosure.read_by(who, args.resident, set(ResidentField), "cli.subject_access")]
        )
        return doc

    doc = _with_store(args, work)
    out = Path(args.out)
    base = out / f"subject-access-{args.resident}"
    json_path, md_path = base.with_suffix(".json"), base.with_suffix(".md")
    # The files hold special-category data: readable by this user only, like the store.
    write_atomically(json_path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n", 0o600)
    write_atomically(md_path, summary_markdown(doc) + "\n", 0o600)
    print(f"{json_path}\n{md_path}")
    print(
        f"subject access export of {args.resident}: {len(doc['alerts'])} alert(s), {len(doc['events'])} "
        f"event(s), {len(doc['reads_of_their_data'])} recorded read(s); files are mode 0600",
        file=sys.stderr,
    )


# -- erasure -------------------------------------------------------------------------------------
def cmd_erase(args: argparse.Namespace) -> None:
    from alarm_centre.privacy.erasure import erase_resident

    if args.confirm != args.resident:
        fail(
            f"to erase {args.resident}, repeat its id: --confirm {args.resident} (this cannot be undone)",
            EXIT_USAGE,
        )
    who = cli_viewer()
    done = _with_store(
        args,
        lambda store, _: erase_resident(
            store, args.resident, actor=who.name, source="cli", reference=args.reference, now=time.time()
        ),
    )
    print(json.dumps(done.to_json(), indent=2))
    print(f"{args.resident} erased (erasure {done.id}, reference {args.reference})", file=sys.stderr)


def cmd_erasures(args: argparse.Namespace) -> None:
    from alarm_centre.privacy.erasure import erasures

    print(json.dumps({"erasures": _with_store(args, lambda store, _: erasures(store))}, indent=2))


# -- retention -----------------------------------------------------------------------------------
def cmd_retention(args: argparse.Namespace) -> None:
    from alarm_centre.privacy.retention import RetentionPolicy, apply_retention, recent_runs
    from bridge.retention_kinds import RETENTION_KINDS

    async def work(store: Any, config: Any) -> tuple[list[dict[str, Any]], Any, list[dict[str, Any]]]:
        policy = RetentionPolicy(dict(config.retention.days))
        report = None
        if args.run:
            report = await apply_retention(
                store, RETENTION_KINDS, policy, now=time.time(), batch=config.retention.batch, node="cli"
            )
        return policy.describe(RETENTION_KINDS), report, await recent_runs(store, 5)

    policy, report, runs = _with_store(args, work)
    for kind in policy:
        days = "kept for ever" if kind["days"] is None else f"{kind['days']} days"
        print(f"{kind['kind']:<16} {days:<14} {kind['what']}")
    if report is not None:
        print("run now: " + ", ".join(f"{k} {n}" for k, n in report.counts.items()))
    elif runs:
        last = runs[0]
        print(
            f"last run {last['started_at']} on {last['node']}: "
            + (last["error"] or json.dumps(last["counts"]))
        )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``privacy reads|export|erase|erasures|retention`` to the top-level subcommands."""
    privacy = sub.add_parser(
        "privacy",
        help="data protection: the audit of reads, subject access, erasure, retention",
        description="Data protection (docs/data-protection.md). Run as the service's user with its "
        "configuration; everything done is recorded as USER@cli.",
    ).add_subparsers(dest="privacy_command", metavar="ACTION", required=True)

    p = privacy.add_parser("reads", parents=[common], help="who read which resident's data, newest first")
    p.add_argument("--resident", metavar="ID", help="one resident's reads")
    p.add_argument("--actor", metavar="NAME", help="one member of staff's reads")
    p.add_argument("--since", metavar="TIME", help="from this time (RFC 3339)")
    p.add_argument("--until", metavar="TIME", help="before this time (RFC 3339)")
    p.add_argument("--limit", type=int, default=500, metavar="N", help="at most N reads (default 500)")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.set_defaults(func=cmd_reads)

    p = privacy.add_parser(
        "export",
        parents=[common],
        help="everything held about one resident: a JSON file and a readable summary (subject access)",
    )
    p.add_argument("resident", metavar="RESIDENT_ID")
    p.add_argument("--out", default=".", metavar="DIR", help="where to write the two files (default .)")
    p.set_defaults(func=cmd_export)

    p = privacy.add_parser(
        "erase",
        parents=[common],
        help="erase a resident on request (refused while an alert of theirs is open)",
        description="Delete the resident's record, check-ins, Echo links and their units' events; "
        "unlink their units; anonymise their alerts (statistics keep them). Cannot be undone.",
    )
    p.add_argument("resident", metavar="RESIDENT_ID")
    p.add_argument("--reference", required=True, help="the request's reference in your own log")
    p.add_argument("--confirm", required=True, metavar="RESIDENT_ID", help="the resident's id again")
    p.set_defaults(func=cmd_erase)

    p = privacy.add_parser("erasures", parents=[common], help="the erasures done")
    p.set_defaults(func=cmd_erasures)

    p = privacy.add_parser(
        "retention", parents=[common], help="the retention periods and the last run; --run runs it now"
    )
    p.add_argument("--run", action="store_true", help="delete or anonymise what is due now")
    p.set_defaults(func=cmd_retention)
