"""Console pages for installers (and operators, read-only): the installations table and one unit's page
with its peripherals, configuration versions and the live commissioning checklist.

Server-rendered and escaped. While a unit is in test mode its checklist updates in place every few
seconds (``installation.js`` reads this same page again and swaps the checklist in, never reloading the
page and never moving focus), and a "Pause live updates" button stops it (WCAG 2.2.1, 2.2.2). Actions
(test mode, settings, credentials) are made with the CLI or the API; see docs/installing.md.

People are shown by name (the resident's id underneath, for the CLI), kinds in words, and times as
``<time>`` elements: readable UTC from the server, turned into the browser's local time by layout.js.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from aiohttp import web

from alarm_centre.console import ConsolePage, Safe, add_console_page, escape, page_response
from alarm_centre.console.pages import require_page
from alarm_centre.http.api import viewer
from alarm_centre.privacy import disclosure as disclose
from alarm_centre.registry.routes import REGISTRY
from alarm_centre.store.tx import NotFound
from devices.events import DEVICE_ID_RE

PAGE = ConsolePage("/console/installations", "Installations", "devices:read", 60)
#: Seconds between live updates of a checklist in test mode (installation.js reads it from the page).
REFRESH_S = 3
KIND_WORDS = {
    "gsm_unit": "GSM unit",
    "ip_unit": "IP unit",
    "serial_unit": "Serial unit",
    "alexa": "Alexa (Echo)",
}
STATUS_FILTERS = {"active": "Active", "retired": "Retired", "all": "All"}


def _cell(c: Any) -> str:
    return c if isinstance(c, Safe) else escape("—" if c is None or c == "" else c)


def _table(headers: list[str], rows: list[list[Any]], *, caption: str = "") -> Safe:
    head = "".join(f'<th scope="col">{escape(h)}</th>' for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    cap = f'<caption class="sr-only">{escape(caption)}</caption>' if caption else ""
    # A narrow screen scrolls a wide table inside its own box (focusable, so by keyboard too), never the
    # whole page (WCAG 1.4.10, 2.1.1).
    region = f' role="region" tabindex="0" aria-label="{escape(caption)}"' if caption else ""
    return Safe(
        f'<div class="table-wrap"{region}><table class="data-table">{cap}<thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def when(value: str | None, *, empty: str = "—") -> Safe:
    """An ISO time as ``<time>``: readable UTC here, the viewer's local time once layout.js has run."""
    if not value:
        return escape(empty)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return escape(value)
    text = at.strftime("%d %b %Y, %H:%M:%S UTC")
    return Safe(f'<time datetime="{escape(value)}" data-local>{escape(text)}</time>')


def _online(value: bool | None) -> Safe:
    word, cls = {True: ("online", "ok"), False: ("offline", "bad"), None: ("never seen", "none")}[value]
    return Safe(f'<span class="chip chip-{cls}">{escape(word)}</span>')


def _kind(kind: str) -> str:
    return KIND_WORDS.get(kind, kind)


def _resident(resident_id: str | None, names: Mapping[str, str]) -> Safe:
    if not resident_id:
        return Safe('<span class="muted">not linked</span>')
    name = names.get(resident_id)
    if name is None:
        return escape(resident_id)
    return Safe(f'{escape(name)}<br><span class="sub">{escape(resident_id)}</span>')


async def _names_shown(request: web.Request, resident_ids: list[str | None], purpose: str) -> dict[str, str]:
    """The names of the residents this page shows, as the user may see them (each one a read)."""
    registry = request.app[REGISTRY]
    every = await registry.resident_names()
    found = {rid: every[rid] for rid in resident_ids if rid and rid in every}
    return await disclose.names(registry.store, viewer(request, "devices:read"), found, purpose=purpose)


async def installations(request: web.Request) -> web.StreamResponse:
    require_page(request, "devices:read")
    registry = request.app[REGISTRY]
    status = request.query.get("status", "active")
    devices = await registry.list_devices(status=status)
    names = await _names_shown(request, [d["resident_id"] for d in devices], "registry.installations_page")
    rows = [
        [
            Safe(f'<a href="{escape(PAGE.path + "/" + d["id"])}" class="device-id">{escape(d["id"])}</a>'),
            _kind(d["kind"]),
            _resident(d["resident_id"], names),
            _online(d["online"]),
            when(d["last_seen_at"], empty="never"),
            when(d["heartbeat_due_at"]),
            Safe('<span class="chip chip-test">until ' + when(d["test_mode_until"]) + "</span>")
            if d["test_mode_until"]
            else "no",
            f"v{d['config']['applied_version']}" + (" (change pending)" if d["config"]["pending"] else ""),
        ]
        for d in devices
    ]
    filters = " ".join(
        f'<a href="{escape(PAGE.path + "?status=" + key)}"'
        + (' aria-current="page"' if key == status else "")
        + f">{escape(word)}</a>"
        for key, word in STATUS_FILTERS.items()
    )
    count = f"{len(devices)} device" + ("" if len(devices) == 1 else "s")
    body = Safe(
        '<div class="page"><h1>Installations</h1>'
        f'<div class="page-sub"><span>{escape(count)}</span><nav class="filters" aria-label="Which devices">'
        f"{filters}</nav><span>times in your local time</span></div>"
        + (
            _table(
                [
                    "Device",
                    "Kind",
                    "Resident",
                    "Connection",
                    "Last seen",
                    "Heartbeat due",
                    "Test mode",
                    "Config",
                ],
                rows,
                caption="Registered devices",
            )
            if rows
            else '<p class="empty">No devices here. Register one with '
            "<code>telecare-bridge devices add</code>.</p>"
        )
        + "</div>"
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
    names = await _names_shown(request, [d["resident_id"]], "registry.installation_page")
    parts = [
        '<div class="page">',
        f'<p class="page-sub"><a href="{escape(PAGE.path)}">← All installations</a></p>',
        f"<h1>{escape(d['id'])} <small>{escape(_kind(d['kind']))}, {escape(d['status'])}</small></h1>",
        _table(
            ["Resident", "SIM number", "IMEI", "Firmware", "Connection", "Last seen", "Heartbeat due"],
            [
                [
                    _resident(d["resident_id"], names),
                    d["phone"],
                    d["imei"],
                    d["firmware"],
                    _online(d["online"]),
                    when(d["last_seen_at"], empty="never"),
                    when(d["heartbeat_due_at"]),
                ]
            ],
            caption="The device",
        ),
    ]
    if d["peripherals"]:
        parts.append("<h2>Peripherals</h2>")
        parts.append(
            _table(
                ["Peripheral", "Type", "Location"],
                [[p["id"], p["type"], p["location"]] for p in d["peripherals"]],
                caption="Peripherals",
            )
        )
    live = False
    try:
        visit = await registry.visit(device_id)
    except NotFound:
        visit = None
    if visit is not None:
        live = bool(visit["in_test_mode"])
        state = (
            Safe("in test mode until " + when(visit["ends_at"]))
            if live
            else escape(visit["finish_reason"] or "over")
        )
        pause = (
            '<p><button type="button" id="live-pause" class="small" aria-pressed="false">'
            f'Pause live updates</button> <span class="muted">(every {REFRESH_S} s)</span></p>'
            if live
            else ""
        )
        parts.append(
            f'<section id="commissioning" aria-labelledby="commissioning-heading" '
            f'data-live="{"true" if live else "false"}" data-every-s="{REFRESH_S}">'
            f'<h2 id="commissioning-heading">Commissioning visit {escape(visit["visit_id"])}</h2>{pause}'
            f'<p role="status" id="commissioning-progress">{state}: <strong>{visit["confirmed"]} of '
            f'{visit["total"]}</strong> confirmed</p><div id="commissioning-checklist">'
        )
        parts.append(
            _table(
                ["Done", "Peripheral", "Press it: sends", "Confirmed", "Test alert"],
                [
                    [
                        "✔" if i["confirmed_at"] else "…",
                        i["peripheral_id"] or i["type"],
                        i["event"],
                        when(i["confirmed_at"], empty="not yet"),
                        i["alert_id"],
                    ]
                    for i in visit["checklist"]
                ],
                caption="Test presses to make",
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
        parts.append("</div></section>")
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
                        when(h["applied_at"], empty="not yet"),
                        ", ".join(f"{k}={v}" for k, v in h["settings"].items()),
                    ]
                    for h in config["history"]
                ],
                caption="Configuration versions",
            )
        )
    parts.append("</div>")
    return page_response(
        request,
        title=f"Installation {device_id}",
        body=Safe("".join(parts)),
        scripts=("/static/console/installation.js",) if live else (),
    )


def add_installer_pages(app: web.Application) -> None:
    add_console_page(app, PAGE, installations)
    app.router.add_get(PAGE.path + "/{device_id}", installation)
