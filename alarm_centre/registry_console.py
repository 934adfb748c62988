"""Console pages for installers (and operators, read-only): the installations table and one unit's page
with its peripherals, configuration versions and the live commissioning checklist.

Server-rendered and escaped; a page showing a unit in test mode asks the browser to reload every few
seconds (``Refresh`` header) so each test press shows up as it arrives. Actions (test mode, settings,
credentials) are made with the CLI or the API; see docs/installing.md.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from alarm_centre.console import ConsolePage, Safe, add_console_page, escape, page_response
from alarm_centre.console.pages import require_page
from alarm_centre.registry_api import REGISTRY
from alarm_centre.store.base import NotFound
from devices.events import DEVICE_ID_RE

PAGE = ConsolePage("/console/installations", "Installations", "devices:read", 60)
REFRESH_S = 3


def _table(headers: list[str], rows: list[list[Any]]) -> Safe:
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = "".join(
        "<tr>"
        + "".join(f"<td>{c if isinstance(c, Safe) else escape('-' if c is None else c)}</td>" for c in row)
        + "</tr>"
        for row in rows
    )
    return Safe(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def _online(value: bool | None) -> str:
    return {True: "online", False: "offline", None: "never seen"}[value]


async def installations(request: web.Request) -> web.StreamResponse:
    require_page(request, "devices:read")
    devices = await request.app[REGISTRY].list_devices(status=request.query.get("status", "active"))
    rows = [
        [
            Safe(f'<a href="{escape(PAGE.path + "/" + d["id"])}">{escape(d["id"])}</a>'),
            d["kind"],
            d["resident_id"],
            _online(d["online"]),
            d["last_seen_at"],
            d["heartbeat_due_at"],
            "yes" if d["test_mode_until"] else "no",
            f"v{d['config']['applied_version']}" + (" (pending)" if d["config"]["pending"] else ""),
        ]
        for d in devices
    ]
    body = Safe(
        f"<h1>Installations</h1><p>{len(devices)} device(s).</p>"
        + _table(
            ["Device", "Kind", "Resident", "Status", "Last seen", "Heartbeat due", "Test mode", "Config"],
            rows,
        )
    )
    return page_response(request, title="Installations", body=body)


async def installation(request: web.Request) -> web.StreamResponse:
    require_page(request, "devices:read")
    registry = request.app[REGISTRY]
    device_id = request.match_info["device_id"]
    try:
        if DEVICE_ID_RE.fullmatch(device_id) is None:  # the one id rule: no such row can exist
            raise NotFound(device_id[:64])
        d = await registry.get_device(device_id)
    except NotFound:
        return page_response(
            request, title="Not found", status=404, body=Safe(f"<h1>No device {escape(device_id)}</h1>")
        )
    parts = [
        f"<h1>{escape(d['id'])} <small>{escape(d['kind'])}, {escape(d['status'])}</small></h1>",
        _table(
            ["Resident", "SIM number", "IMEI", "Firmware", "Status", "Last seen", "Heartbeat due"],
            [
                [
                    d["resident_id"],
                    d["phone"],
                    d["imei"],
                    d["firmware"],
                    _online(d["online"]),
                    d["last_seen_at"],
                    d["heartbeat_due_at"],
                ]
            ],
        ),
    ]
    if d["peripherals"]:
        parts.append("<h2>Peripherals</h2>")
        parts.append(
            _table(
                ["Peripheral", "Type", "Location"],
                [[p["id"], p["type"], p["location"]] for p in d["peripherals"]],
            )
        )
    refresh = False
    try:
        visit = await registry.visit(device_id)
    except NotFound:
        visit = None
    if visit is not None:
        refresh = bool(visit["in_test_mode"])
        state = (
            "in test mode until " + str(visit["ends_at"]) if refresh else (visit["finish_reason"] or "over")
        )
        parts.append(
            f"<h2>Commissioning visit {visit['visit_id']}</h2>"
            f'<p role="status">{escape(state)}: <strong>{visit["confirmed"]} of {visit["total"]}'
            "</strong> confirmed</p>"
        )
        parts.append(
            _table(
                ["", "Peripheral", "Press it: sends", "Confirmed", "Test alert"],
                [
                    [
                        "✔" if i["confirmed_at"] else "…",
                        i["peripheral_id"] or i["type"],
                        i["event"],
                        i["confirmed_at"],
                        i["alert_id"],
                    ]
                    for i in visit["checklist"]
                ],
            )
        )
        if visit["summary"]:
            summary = visit["summary"]
            verdict = (
                "passed" if summary.get("passed") else "not passed; missing " + ", ".join(summary["missing"])
            )
            parts.append(
                f"<p>Summary: {escape(verdict)}"
                + (f" &mdash; {escape(visit['note'])}" if visit["note"] else "")
                + "</p>"
            )
    config = await registry.config_status(device_id)
    if config["history"]:
        parts.append("<h2>Configuration</h2>")
        parts.append(
            _table(
                ["Version", "State", "Attempts", "Requested by", "Applied", "Settings"],
                [
                    [
                        f"v{h['version']}",
                        h["state"],
                        h["attempts"],
                        h["requested_by"],
                        h["applied_at"],
                        ", ".join(f"{k}={v}" for k, v in h["settings"].items()),
                    ]
                    for h in config["history"]
                ],
            )
        )
    response = page_response(request, title=f"Installation {device_id}", body=Safe("".join(parts)))
    if refresh:
        response.headers["Refresh"] = str(REFRESH_S)
    return response


def add_installer_pages(app: web.Application) -> None:
    add_console_page(app, PAGE, installations)
    app.router.add_get(PAGE.path + "/{device_id}", installation)
