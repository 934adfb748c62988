"""``telecare-bridge residents|devices|link|commission|import|export``: the installer's commands.

They work on the store named by the configuration (the same one a running bridge uses: SQLite in WAL
mode or PostgreSQL), so they need no API token; what they change is audited as ``{user}@cli``.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from bridge.cli.common import EXIT_FAILED, EXIT_USAGE, cli_viewer, config_path, fail, load, open_cli_store
from devices.numbers import whole_number
from devices.registry import DeviceKind

T = TypeVar("T")
SOURCE = "cli"


def _actor() -> str:
    return f"{getpass.getuser()}@cli"


def _with_registry(args: argparse.Namespace, work: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run ``work(registry, config)`` on the configured store; store refusals become one clear line."""
    from alarm_centre.store import Conflict, InvalidRequest, NotFound
    from bridge.feature_registry import make_registry

    config = load(args)

    async def main() -> T:
        async with open_cli_store(config, config_path(args.config)) as store:
            return await work(make_registry(config, store), config)

    try:
        return asyncio.run(main())
    except NotFound as exc:
        fail(str(exc), EXIT_FAILED)
    except Conflict as exc:
        fail(f"refused: {exc}", EXIT_FAILED)
    except InvalidRequest as exc:  # also a reference to a record that is not there ("no resident 'x'")
        fail(f"invalid: {exc}", EXIT_FAILED)


def _validated(model: Any, data: dict[str, Any]) -> Any:
    from devices.registry import errors_of

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        for err in errors_of(exc):
            print(f"telecare-bridge: {err['field']}: {err['message']}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table with a header rule; ``None`` shows as ``-``."""
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(r: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _ago(iso_ts: str | None) -> str:
    if not iso_ts:
        return "never"
    from datetime import datetime

    seconds = time.time() - datetime.fromisoformat(iso_ts.replace("Z", "+00:00")).timestamp()
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


# -- residents -----------------------------------------------------------------------------------
def _responders(values: list[str] | None) -> list[dict[str, str]] | None:
    if values is None:
        return None
    out = []
    for value in values:
        name, sep, phone = value.rpartition("=")
        if not sep:
            fail(f"--responder {value!r}: write it as 'Name=+447700900123'", EXIT_USAGE)
        out.append({"name": name.strip(), "phone": phone.strip()})
    return out


def _resident_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        "name": args.name,
        "address": args.address,
        "key_safe": args.key_safe,
        "medical_notes": args.medical_notes,
        "language": args.language,
        "responders": _responders(args.responder),
        "dc09_account": args.dc09_account,
    }
    return {k: v for k, v in fields.items() if v is not None}


def cmd_residents_add(args: argparse.Namespace) -> None:
    from devices.registry import Resident

    resident = _validated(Resident, {"id": args.id, **_resident_fields(args)})
    _with_registry(args, lambda reg, _: reg.create_resident(resident, actor=_actor(), source=SOURCE))
    print(f"resident {resident.id} ({resident.name}) added with {len(resident.responders)} responder(s)")


def cmd_residents_edit(args: argparse.Namespace) -> None:
    from devices.registry import Resident, merge

    async def work(reg: Any, _: Any) -> Any:
        current = await reg.get_resident(args.id)
        try:
            updated = merge(Resident, current, _resident_fields(args))
        except ValidationError:
            _validated(Resident, {**current.model_dump(mode="json"), **_resident_fields(args)})
            raise
        done = await reg.update_resident(updated, actor=_actor(), source=SOURCE)
        await _record_reads(reg, [done.model_dump(mode="json")], "cli.residents_edit")
        return done

    resident = _with_registry(args, work)
    print(f"resident {resident.id} updated")
    _print_resident(resident, [])


async def _record_reads(reg: Any, records: list[dict[str, Any]], purpose: str) -> None:
    """What a command prints of residents is a read of their data (docs/data-protection.md)."""
    from alarm_centre.privacy import disclosure

    await disclosure.residents(reg.store, cli_viewer(), records, purpose=purpose)


def cmd_residents_list(args: argparse.Namespace) -> None:
    async def work(reg: Any, _: Any) -> Any:
        rows = await reg.list_residents()
        await _record_reads(
            reg,
            [{"id": r.id, "name": r.name, "language": r.language, "address": r.address} for r, _ in rows],
            "cli.residents_list",
        )
        return rows

    rows = _with_registry(args, work)
    print(
        table(
            ["ID", "NAME", "DEVICES", "RESPONDERS", "LANGUAGE", "ADDRESS"],
            [
                [r.id, r.name, n, len(r.responders), r.language, r.address.replace("\n", ", ")[:40]]
                for r, n in rows
            ],
        )
    )


def _print_resident(r: Any, devices: list[dict[str, Any]]) -> None:
    print(
        f"resident       {r.id}\nname           {r.name}\naddress        {r.address or '-'}\n"
        f"key safe       {r.key_safe or '-'}\nmedical notes  {r.medical_notes or '-'}\n"
        f"language       {r.language}\nDC-09 account  {r.dc09_account or '-'}"
    )
    print("responders" + ("     -" if not r.responders else ""))
    for n, resp in enumerate(r.responders, 1):
        print(f"  {n}. {resp.name}  {resp.phone}")
    if devices:
        print("devices")
        print(
            table(
                ["ID", "KIND", "ONLINE", "LAST SEEN"],
                [[d["id"], d["kind"], _online(d), _ago(d["last_seen_at"])] for d in devices],
            )
        )


def _online(d: dict[str, Any]) -> str:
    return {True: "yes", False: "no", None: "-"}[d["online"]]


def cmd_residents_show(args: argparse.Namespace) -> None:
    async def work(reg: Any, _: Any) -> tuple[Any, Any]:
        resident = await reg.get_resident(args.id)
        await _record_reads(reg, [resident.model_dump(mode="json")], "cli.residents_show")
        return resident, await reg.list_devices(resident_id=args.id)

    resident, devices = _with_registry(args, work)
    _print_resident(resident, devices)


# -- devices -------------------------------------------------------------------------------------
def _peripherals(values: list[str] | None) -> list[dict[str, str]] | None:
    if values is None:
        return None
    from devices.csv_yaml import _split_peripherals

    try:
        return _split_peripherals(";".join(values))
    except ValueError as exc:
        fail(f"--peripheral: {exc}", EXIT_USAGE)
        raise


def _device_fields(args: argparse.Namespace) -> dict[str, Any]:
    fields = {
        "kind": args.kind,
        "resident_id": args.resident,
        "channel": args.channel,
        "phone": args.phone,
        "imei": args.imei,
        "serial_port": args.serial_port,
        "firmware": args.firmware,
        "alexa_device_id": args.alexa_device_id,
        "dc09_account": args.dc09_account,
        "dc09_key": args.dc09_key,
        "scaip_cid": args.scaip_cid,
        "scaip_answer": args.scaip_answer,
        "scaip_password": args.scaip_password,
        "heartbeat_interval_s": args.heartbeat,
        "heartbeat_grace_s": args.grace,
        "peripherals": _peripherals(args.peripheral),
    }
    return {k: v for k, v in fields.items() if v is not None}


def cmd_devices_add(args: argparse.Namespace) -> None:
    from devices.registry import Device

    device = _validated(Device, {"id": args.id, **_device_fields(args)})
    body = _with_registry(args, lambda reg, _: reg.create_device(device, actor=_actor(), source=SOURCE))
    print(f"device {device.id} ({device.kind.value}) registered")
    _print_device(body)


def cmd_devices_edit(args: argparse.Namespace) -> None:
    from devices.registry import Device

    async def work(reg: Any, _: Any) -> Any:
        current = await reg.device_model(args.id)
        kept = {"dc09_key": current.dc09_key} if current.dc09_key else {}  # write-only: not in the dump
        if current.scaip_password:
            kept["scaip_password"] = current.scaip_password  # write-only too
        changed = _validated(Device, {**current.model_dump(mode="json"), **kept, **_device_fields(args)})
        return await reg.update_device(changed, actor=_actor(), source=SOURCE)

    body = _with_registry(args, work)
    print(f"device {args.id} updated")
    _print_device(body)


def cmd_devices_list(args: argparse.Namespace) -> None:
    devices = _with_registry(
        args, lambda reg, _: reg.list_devices(resident_id=args.resident, status=args.status)
    )
    print(
        table(
            ["ID", "KIND", "RESIDENT", "STATUS", "ONLINE", "LAST SEEN", "HEARTBEAT DUE", "CONFIG"],
            [
                [
                    d["id"],
                    d["kind"],
                    d["resident_id"],
                    d["status"],
                    _online(d),
                    _ago(d["last_seen_at"]),
                    _ago(d["heartbeat_due_at"]) if d["heartbeat_due_at"] else "-",
                    _config(d),
                ]
                for d in devices
            ],
        )
    )


def _config(d: dict[str, Any]) -> str:
    c = d["config"]
    if not c["version"]:
        return "-"
    return f"v{c['applied_version']}" + (f" (v{c['version']} pending)" if c["pending"] else "")


def _unsupervised(d: dict[str, Any]) -> str | None:
    return None if d["kind"] == "alexa" else "not supervised (give --heartbeat)"


def _print_device(d: dict[str, Any]) -> None:
    hb = d.get("effective_heartbeat")
    rows = [
        ("device", d["id"]),
        ("kind", d["kind"]),
        ("status", d["status"]),
        ("resident", d["resident_id"]),
        ("channel", d["channel"]),
        ("SIM number", d["phone"]),
        ("IMEI", d["imei"]),
        ("serial port", d["serial_port"]),
        ("firmware", d["firmware"]),
        ("Alexa device", d["alexa_device_id"]),
        ("DC-09 account", d.get("dc09_account")),
        ("DC-09 key", "set" if d.get("dc09_key_set") else None),  # write-only: never the key itself
        ("SCAIP caller id", d.get("scaip_cid")),
        ("SCAIP answer", d.get("scaip_answer")),
        ("SCAIP SIP password", "set" if d.get("scaip_password_set") else None),  # write-only
        ("heartbeat", f"every {hb['interval_s']}s, grace {hb['grace_s']}s" if hb else _unsupervised(d)),
        ("online", _online(d)),
        ("last seen", _ago(d["last_seen_at"])),
        ("test mode until", d["test_mode_until"]),
        ("config", _config(d)),
    ]
    if "credential" in d:
        rows.append(("broker credential", "issued" if d["credential"] else "none"))
    for label, value in rows:
        print(f"{label:<18} {'-' if value is None else value}")
    if d["peripherals"]:
        print("peripherals")
        print(
            table(["ID", "TYPE", "LOCATION"], [[p["id"], p["type"], p["location"]] for p in d["peripherals"]])
        )


def cmd_devices_show(args: argparse.Namespace) -> None:
    _print_device(_with_registry(args, lambda reg, _: reg.get_device(args.id)))


def cmd_devices_retire(args: argparse.Namespace) -> None:
    async def work(reg: Any, config: Any) -> Any:
        body = await reg.retire(args.id, actor=_actor(), source=SOURCE, reason=args.reason or "")
        credentials = _credentials(reg, config)
        if credentials is not None:
            await credentials.sync()
        return body

    _with_registry(args, work)
    print(f"device {args.id} retired; it can no longer connect or be commissioned")


def _credentials(reg: Any, config: Any) -> Any:
    from bridge.feature_registry import make_credentials

    try:
        return make_credentials(config, reg)
    except ValueError as exc:
        fail(str(exc), EXIT_USAGE)


def cmd_devices_credential(args: argparse.Namespace) -> None:
    async def work(reg: Any, config: Any) -> tuple[str, str]:
        credentials = _credentials(reg, config)
        if credentials is None:
            fail("credentials.enabled is false: this bridge does not manage broker passwords", EXIT_USAGE)
        return await credentials.issue(args.id, actor=_actor(), source=SOURCE), config.topic_root

    password, root = _with_registry(args, work)
    print(f"broker credential for {args.id} (shown once; enter it in the unit now):")
    print(
        f"  username  {args.id}\n  topics    {root}/v1/{args.id}/event and .../alarm (publish), "
        ".../cmd and .../ack (read)"
    )
    print(f"  password  {password}")


def _settings(values: list[str]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        if not sep:
            fail(f"--set {item!r}: write it as key=value", EXIT_USAGE)
        value: Any = raw
        if key == "centre_numbers":
            value = [v.strip() for v in raw.split(",") if v.strip()]
        elif whole_number(raw.removeprefix("-")) is not None:
            value = int(raw)
        elif raw in ("true", "false"):
            value = raw == "true"
        if key.startswith("option."):
            settings.setdefault("options", {})[key.removeprefix("option.")] = value
        else:
            settings[key] = value
    return settings


def cmd_devices_configure(args: argparse.Namespace) -> None:
    from devices.registry import UnitSettings

    if args.set:
        settings = _validated(UnitSettings, _settings(args.set))
        status = _with_registry(
            args, lambda reg, _: reg.request_config(args.id, settings, actor=_actor(), source=SOURCE)
        )
        print(f"configuration v{status['version']} queued for {args.id}; pending until the unit confirms it")
    else:
        status = _with_registry(args, lambda reg, _: reg.config_status(args.id))
    print(
        table(
            ["VERSION", "STATE", "ATTEMPTS", "REQUESTED BY", "APPLIED", "SETTINGS"],
            [
                [
                    f"v{h['version']}",
                    h["state"],
                    h["attempts"],
                    h["requested_by"],
                    h["applied_at"],
                    json.dumps(h["settings"], separators=(",", ":")),
                ]
                for h in status["history"]
            ],
        )
    )


# -- link ----------------------------------------------------------------------------------------
def cmd_link(args: argparse.Namespace) -> None:
    if args.resident is None and not args.unlink:
        fail("give a RESIDENT, or --unlink", EXIT_USAGE)
    resident = None if args.unlink else args.resident
    body = _with_registry(args, lambda reg, _: reg.link(args.device, resident, actor=_actor(), source=SOURCE))
    print(f"device {body['id']} is now " + (f"linked to resident {resident}" if resident else "unlinked"))


# -- bulk ----------------------------------------------------------------------------------------
def _guess_format(path: str, given: str | None) -> str:
    if given:
        return given
    return "csv" if path.lower().endswith(".csv") else "yaml"


class ProgressBar:
    """A one-line progress bar on a terminal's stderr; silent when stderr is not a terminal."""

    def __init__(self, label: str, unit: str, *, stream: Any = None) -> None:
        self.label = label
        self.unit = unit
        self.stream = stream or sys.stderr
        self.shown = False
        self._last = -1

    def update(self, done: int, total: int) -> None:
        if not self.stream.isatty() or total <= 0:
            return
        width = 30
        filled = width * done // total
        if filled == self._last and done != total:
            return
        self._last = filled
        bar = "#" * filled + "." * (width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total} {self.unit}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def cmd_import(args: argparse.Namespace) -> None:
    from devices.csv_yaml import MalformedFile, parse_csv, parse_yaml

    fmt = _guess_format(args.file, args.format)
    if fmt == "csv" and args.kind is None:
        fail("a CSV file holds one kind: give --kind residents or --kind devices", EXIT_USAGE)
    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {args.file}: {exc}", EXIT_USAGE)
    try:
        batch = parse_csv(text, args.kind) if fmt == "csv" else parse_yaml(text)
    except MalformedFile as exc:
        fail(f"{args.file}: {exc}", EXIT_FAILED)
        return
    bar = ProgressBar("checking" if args.dry_run else "importing", "rows")
    report = _with_registry(
        args,
        lambda reg, _: reg.import_batch(
            batch,
            dry_run=args.dry_run,
            update=args.update,
            actor=_actor(),
            source=SOURCE,
            progress=bar.update,
        ),
    )
    bar.close()
    for error in report.errors:
        print(f"{args.file}:{error}", file=sys.stderr)
    summary = ", ".join(
        f"{n} {k} {verb}"
        for verb, counts in (("new", report.created), ("changed", report.updated))
        for k, n in counts.items()
        if n
    )
    if report.errors:
        fail(f"{len(report.errors)} bad row(s); nothing imported", EXIT_FAILED)
    if args.dry_run:
        print(f"dry run: the file is good ({summary or 'nothing to do'}); nothing imported")
    else:
        print(f"imported: {summary or 'nothing to do'}")


def cmd_export(args: argparse.Namespace) -> None:
    from devices.csv_yaml import to_csv, to_yaml

    if args.format == "csv" and args.kind is None:
        fail("CSV holds one kind: give --kind residents or --kind devices", EXIT_USAGE)

    async def work(reg: Any, _: Any) -> Any:
        residents, devices = await reg.export()
        if args.format == "yaml" or args.kind == "residents":
            await _record_reads(
                reg, [r.model_dump(mode="json") for r in residents], f"cli.export.{args.format}"
            )
        return residents, devices

    residents, devices = _with_registry(args, work)
    if args.format == "yaml":
        sys.stdout.write(to_yaml(residents, devices))
    else:
        sys.stdout.write(to_csv(args.kind, residents if args.kind == "residents" else devices))


# -- commissioning -------------------------------------------------------------------------------
def _checklist_lines(visit: dict[str, Any]) -> list[str]:
    lines = []
    for item in visit["checklist"]:
        mark = "x" if item["confirmed_at"] else " "
        what = (
            f"{item['peripheral_id'] or 'unit'} ({item['type']}"
            + (f", {item['location']}" if item["location"] else "")
            + ")"
        )
        done = (
            f"  confirmed {item['confirmed_at'][11:19]}  alert {item['alert_id']}"
            if item["confirmed_at"]
            else ""
        )
        lines.append(f"  [{mark}] {what:<36} press it: sends {item['event']}{done}")
    return lines


def cmd_commission_start(args: argparse.Namespace) -> None:
    async def work(reg: Any, config: Any) -> dict[str, Any]:
        minutes = args.minutes or config.registry.commissioning_minutes
        if minutes > config.registry.max_commissioning_minutes:
            fail(f"--minutes: at most {config.registry.max_commissioning_minutes:g}", EXIT_USAGE)
        visit = await reg.start_visit(
            args.device, installer=_actor(), minutes=minutes, peripherals=args.peripheral
        )
        print(f"{args.device} is in test mode until {visit['ends_at']} (visit {visit['visit_id']}).")
        print("Press each peripheral in turn; each test alarm is confirmed here as it arrives.")
        for line in _checklist_lines(visit):
            print(line, flush=True)
        if args.no_wait:
            return dict(visit)
        shown: set[int] = set()
        try:
            while True:
                visit = await reg.visit(args.device, visit["visit_id"])
                for n, item in enumerate(visit["checklist"]):
                    if item["confirmed_at"] and n not in shown:
                        shown.add(n)
                        print(
                            f"  confirmed [{len(shown)}/{visit['total']}] {item['peripheral_id'] or 'unit'} "
                            f"({item['type']}) at {item['confirmed_at'][11:19]}, "
                            f"test alert {item['alert_id']}",
                            flush=True,
                        )
                if visit["complete"] or visit["finished_at"] or not visit["in_test_mode"]:
                    break
                await asyncio.sleep(args.poll)
        except (KeyboardInterrupt, asyncio.CancelledError):
            print(
                "stopped watching; the unit stays in test mode until it times out or you finish", flush=True
            )
            raise
        if visit["finished_at"] is None:
            visit = await reg.finish_visit(args.device, actor=_actor(), note=args.note)
        return dict(visit)

    visit = _with_registry(args, work)
    if not args.no_wait:
        _print_summary(visit)


def _print_summary(visit: dict[str, Any]) -> None:
    summary = visit["summary"] or {}
    print(
        f"visit {visit['visit_id']} {visit['finish_reason'] or 'in progress'}: "
        f"{visit['confirmed']}/{visit['total']} confirmed"
        + ("" if not summary.get("missing") else f"; missing {', '.join(summary['missing'])}")
    )
    print("PASSED" if summary.get("passed") else "NOT PASSED" if summary else "")


def cmd_commission_status(args: argparse.Namespace) -> None:
    visit = _with_registry(args, lambda reg, _: reg.visit(args.device))
    state = "in test mode" if visit["in_test_mode"] else (visit["finish_reason"] or "test mode over")
    print(
        f"visit {visit['visit_id']} on {visit['device_id']} by {visit['installer']}: {state}; "
        f"{visit['confirmed']}/{visit['total']} confirmed"
    )
    for line in _checklist_lines(visit):
        print(line)
    if visit["summary"]:
        _print_summary(visit)


def cmd_commission_finish(args: argparse.Namespace) -> None:
    visit = _with_registry(args, lambda reg, _: reg.finish_visit(args.device, actor=_actor(), note=args.note))
    _print_summary(visit)


# -- parser --------------------------------------------------------------------------------------
def _resident_options(p: argparse.ArgumentParser, *, required_name: bool) -> None:
    p.add_argument("--name", required=required_name, help="full name")
    p.add_argument("--address", help="postal address (use quotes)")
    p.add_argument("--key-safe", help="where the key safe is and its code")
    p.add_argument("--medical-notes", help="what a responder should know")
    p.add_argument("--language", help="language tag, e.g. en-GB or cy (default en-GB)")
    p.add_argument(
        "--responder",
        action="append",
        metavar="NAME=+E164",
        help="a responder, in calling order; repeat for each (editing replaces the whole list)",
    )
    p.add_argument(
        "--dc09-account",
        help="the DC-09 account the upstream monitoring centre knows the resident by (3-16 hex; '' clears)",
    )


def _device_options(p: argparse.ArgumentParser, *, required_kind: bool) -> None:
    p.add_argument("--kind", required=required_kind, choices=[k.value for k in DeviceKind])
    p.add_argument("--resident", help="link to this resident id")
    p.add_argument(
        "--channel",
        choices=["mqtt", "serial", "sms", "dc09", "scaip"],
        help="how commands reach it (default mqtt)",
    )
    p.add_argument("--dc09-account", help="SIA DC-09 account the unit reports as (3-16 hex)")
    p.add_argument("--dc09-key", help="its DC-09 AES key (16/24/32 characters or 32/48/64 hex; write-only)")
    p.add_argument("--scaip-cid", help="SCAIP caller id (cid) the unit reports as (1-32 digits)")
    p.add_argument(
        "--scaip-answer",
        choices=["in_200", "message"],
        help="how the unit gets SCAIP answers (default scaip.answer)",
    )
    p.add_argument("--scaip-password", help="password of the unit's SIP identity, for digest (write-only)")
    p.add_argument("--phone", metavar="+E164", help="the unit's SIM number")
    p.add_argument("--imei", help="the unit's IMEI (15 digits)")
    p.add_argument("--serial-port", help="serial port of a serial unit, e.g. /dev/ttyUSB0")
    p.add_argument("--firmware", help="firmware version")
    p.add_argument("--alexa-device-id", help="Alexa deviceId of an Echo")
    p.add_argument(
        "--heartbeat", type=int, metavar="SECONDS", help="heartbeat interval (default heartbeats.*)"
    )
    p.add_argument("--grace", type=int, metavar="SECONDS", help="grace after a missed heartbeat")
    p.add_argument(
        "--peripheral",
        action="append",
        metavar="ID:TYPE[@LOCATION]",
        help="a peripheral, e.g. p1:pendant@neck; repeat for each (editing replaces the list). "
        "Types: pendant, fall_detector, smoke, heat, co, gas, flood, door, bed_sensor, "
        "chair_sensor, epilepsy, pir",
    )


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the installer's commands to the top-level parser."""
    residents = sub.add_parser("residents", help="register and edit residents").add_subparsers(
        dest="residents_command", metavar="ACTION", required=True
    )
    p = residents.add_parser("add", parents=[common], help="register a resident")
    p.add_argument("id", help="resident id (1-64 of A-Za-z0-9._-, not . or ..)")
    _resident_options(p, required_name=True)
    p.set_defaults(func=cmd_residents_add)
    p = residents.add_parser("edit", parents=[common], help="change a resident's details")
    p.add_argument("id")
    _resident_options(p, required_name=False)
    p.set_defaults(func=cmd_residents_edit)
    p = residents.add_parser("list", parents=[common], help="list residents as a table")
    p.set_defaults(func=cmd_residents_list)
    p = residents.add_parser("show", parents=[common], help="a resident's details, responders and devices")
    p.add_argument("id")
    p.set_defaults(func=cmd_residents_show)

    devices = sub.add_parser(
        "devices", help="register, configure and retire units and Alexa devices"
    ).add_subparsers(dest="devices_command", metavar="ACTION", required=True)
    p = devices.add_parser("add", parents=[common], help="register a unit or an Alexa device")
    p.add_argument(
        "id", help="device id (1-64 of A-Za-z0-9._-, not . or ..): the unit's MQTT id and broker username"
    )
    _device_options(p, required_kind=True)
    p.set_defaults(func=cmd_devices_add)
    p = devices.add_parser("edit", parents=[common], help="change a device's details")
    p.add_argument("id")
    _device_options(p, required_kind=False)
    p.set_defaults(func=cmd_devices_edit)
    p = devices.add_parser("list", parents=[common], help="list devices as a table")
    p.add_argument("--resident", help="only this resident's devices")
    p.add_argument("--status", default="active", choices=["active", "retired", "all"])
    p.set_defaults(func=cmd_devices_list)
    p = devices.add_parser("show", parents=[common], help="one device in full")
    p.add_argument("id")
    p.set_defaults(func=cmd_devices_show)
    p = devices.add_parser(
        "retire", parents=[common], help="retire a device (refused while it has open alerts)"
    )
    p.add_argument("id")
    p.add_argument("--reason", help="why, for the audit trail")
    p.set_defaults(func=cmd_devices_retire)
    p = devices.add_parser(
        "configure",
        parents=[common],
        help="change a unit's settings remotely, or show them",
        description="With --set, queue a configure command (retried until the unit confirms "
        "it); without, show the versions and their state.",
    )
    p.add_argument("id")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="heartbeat_interval_s=300, volume=7, centre_numbers=+441134960000,+441134960001, "
        "option.NAME=VALUE; repeat for each",
    )
    p.set_defaults(func=cmd_devices_configure)
    p = devices.add_parser(
        "credential", parents=[common], help="issue the unit's broker password (shown once)"
    )
    p.add_argument("id")
    p.set_defaults(func=cmd_devices_credential)

    p = sub.add_parser("link", parents=[common], help="link a unit or Alexa device to a resident")
    p.add_argument("device")
    p.add_argument("resident", nargs="?")
    p.add_argument("--unlink", action="store_true", help="remove the device's link instead")
    p.set_defaults(func=cmd_link)

    commission = sub.add_parser("commission", help="commission a unit with test alarms").add_subparsers(
        dest="commission_command", metavar="ACTION", required=True
    )
    p = commission.add_parser(
        "start",
        parents=[common],
        help="test mode and the press-each-peripheral checklist",
        description="Put the unit into test mode, print the checklist, then confirm each "
        "test alarm as it arrives until all are pressed (the visit is then "
        "finished and its summary stored) or test mode times out.",
    )
    p.add_argument("device")
    p.add_argument("--minutes", type=float, help="test mode length (default registry.commissioning_minutes)")
    p.add_argument(
        "--peripheral", action="append", metavar="ID", help="only these peripherals; repeat for each"
    )
    p.add_argument("--note", help="a note for the visit summary")
    p.add_argument("--no-wait", action="store_true", help="start test mode and return at once")
    p.add_argument("--poll", type=float, default=0.5, help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_commission_start)
    p = commission.add_parser("status", parents=[common], help="the latest visit's checklist and summary")
    p.add_argument("device")
    p.set_defaults(func=cmd_commission_status)
    p = commission.add_parser("finish", parents=[common], help="end test mode now and store the summary")
    p.add_argument("device")
    p.add_argument("--note", help="a note for the visit summary")
    p.set_defaults(func=cmd_commission_finish)

    p = sub.add_parser(
        "import",
        parents=[common],
        help="bulk import residents and devices (CSV or YAML)",
        description="Check every row first; report each bad row by line number; import nothing "
        "when any row is bad.",
    )
    p.add_argument("file")
    p.add_argument("--format", choices=["csv", "yaml"], help="default: from the file name")
    p.add_argument("--kind", choices=["residents", "devices"], help="what a CSV file holds")
    p.add_argument("--dry-run", action="store_true", help="check only; import nothing")
    p.add_argument("--update", action="store_true", help="change records whose id is already registered")
    p.set_defaults(func=cmd_import)
    p = sub.add_parser(
        "export", parents=[common], help="export residents and devices (CSV or YAML) to stdout"
    )
    p.add_argument("--format", choices=["csv", "yaml"], default="yaml")
    p.add_argument("--kind", choices=["residents", "devices"], help="what to export as CSV")
    p.set_defaults(func=cmd_export)
