"""CLI for the voice path: link Echos, set daily check-ins, and simulate Alexa on one machine.

``telecare-bridge alexa link|unlink|links|check-in`` work on the store named by the config (like
``users add``). ``telecare-bridge simulate alexa-ca`` makes a test CA in a folder and serves its
certificate chain over HTTPS; ``telecare-bridge simulate alexa "trigger help" --device-id ECHO`` signs a
request with that CA and posts it to the bridge, which trusts the CA only when its config says so.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bridge.cli.common import (
    EXIT_FAILED,
    EXIT_USAGE,
    config_path,
    fail,
    load,
    open_cli_store,
    run_until_signal,
)

DEFAULT_CA_DIR = "data/alexa-test-ca"
DEFAULT_CA_PORT = 18443
DEFAULT_TEST_SKILL_ID = "amzn1.ask.skill.00000000-0000-0000-0000-000000000000"
ROOT_FILE = "alexa-test-ca.pem"
CHAIN_FILE = "echo-api-cert.pem"
KEY_FILE = "echo-api-key.pem"
TLS_CERT_FILE = "tls-cert.pem"
TLS_KEY_FILE = "tls-key.pem"
INFO_FILE = "simulator.json"


# -- store commands --------------------------------------------------------------------------------
def _with_voice(args: argparse.Namespace, work: Any) -> Any:
    from skills.voice import VoiceService

    config = load(args)

    async def main() -> Any:
        async with open_cli_store(config, config_path(args.config)) as store:
            return await work(VoiceService(store))

    return asyncio.run(main())


def cmd_link(args: argparse.Namespace) -> None:
    from alarm_centre.store.tx import Conflict, InvalidRequest
    from skills.voice import LinkError, VoiceService

    async def work(service: VoiceService) -> dict[str, Any]:
        if args.resident_name:
            await service.store.devices.upsert_resident(args.resident, args.resident_name)
        return await service.link_echo(
            args.device_id, args.alexa_device_id, args.resident, args.alexa_user_id
        )

    try:
        link = _with_voice(args, work)
    except LinkError as exc:
        flag = {"resident_id": "--resident"}.get(exc.field, "--" + exc.field.replace("_", "-"))
        fail(f"{flag}: {exc.message}", EXIT_USAGE)
    except Conflict as exc:
        fail(str(exc), EXIT_FAILED)
    except InvalidRequest as exc:  # the resident's id or name breaks the registry's rules
        fail(f"invalid: {exc}", EXIT_USAGE)
    print(f"linked Echo {link['device_id']} to resident {link['resident_id']}")
    print(f"  alexa_device_id {link['alexa_device_id']}")


def cmd_unlink(args: argparse.Namespace) -> None:
    if not _with_voice(args, lambda service: service.unlink_echo(args.device_id)):
        fail(f"no Echo link with --device-id {args.device_id}", EXIT_FAILED)
    print(f"unlinked Echo {args.device_id}")


def cmd_links(args: argparse.Namespace) -> None:
    links = _with_voice(args, lambda service: service.list_links())
    if not links:
        print("no Echo links")
    for link in links:
        print(f"{link['device_id']}\tresident {link['resident_id']}\t{link['alexa_device_id']}")


def cmd_check_in(args: argparse.Namespace) -> None:
    from skills.voice import LinkError, VoiceService

    async def work(service: VoiceService) -> Any:
        if args.off:
            return await service.clear_check_in_schedule(args.resident)
        return await service.set_check_in_schedule(args.resident, args.deadline, args.timezone)

    if not args.off and not args.deadline:
        fail("--deadline HH:MM is required (or --off)", EXIT_USAGE)
    try:
        result = _with_voice(args, work)
    except LinkError as exc:
        flag = {"resident_id": "--resident"}.get(exc.field, "--" + exc.field)
        fail(f"{flag}: {exc.message}", EXIT_USAGE)
    if args.off:
        print(f"daily check-in for {args.resident} {'removed' if result else 'was not set'}")
        return
    due = datetime.fromtimestamp(result["next_due_at"], UTC).isoformat(timespec="minutes")
    print(f"daily check-in for {args.resident} by {result['deadline']} {result['timezone']} (next due {due})")


# -- simulator: a test CA on disk ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CaFolder:
    """The files ``simulate alexa-ca`` keeps in its folder."""

    path: Path

    def file(self, name: str) -> Path:
        return self.path / name

    def info(self) -> dict[str, Any]:
        try:
            loaded: dict[str, Any] = json.loads(self.file(INFO_FILE).read_text())
        except FileNotFoundError:
            fail(
                f"no test CA in {self.path}: run 'telecare-bridge simulate alexa-ca --out {self.path}' first",
                EXIT_USAGE,
            )
        return loaded

    def usable(self) -> bool:
        from cryptography import x509

        try:
            leaf = x509.load_pem_x509_certificate(self.file(CHAIN_FILE).read_bytes())
        except (OSError, ValueError):
            return False
        return all(self.file(n).exists() for n in (ROOT_FILE, KEY_FILE, TLS_CERT_FILE, TLS_KEY_FILE)) and (
            leaf.not_valid_after_utc > datetime.now(UTC) + timedelta(hours=1)
        )

    def create(self, host: str) -> None:
        from cryptography.hazmat.primitives import serialization

        from simulators.alexa import TestCertificateAuthority

        self.path.mkdir(parents=True, exist_ok=True)
        ca = TestCertificateAuthority.create(days=30)
        signing = ca.issue_signing_cert(not_after=datetime.now(UTC) + timedelta(days=29))
        server = ca.issue_server_cert(host)

        def key_pem(key: Any) -> bytes:
            return bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

        ca.write_root(self.file(ROOT_FILE))
        self.file(CHAIN_FILE).write_bytes(signing.chain_pem)
        self.file(TLS_CERT_FILE).write_bytes(server.chain_pem)
        for name, key in ((KEY_FILE, signing.key), (TLS_KEY_FILE, server.key)):
            target = self.file(name)
            target.write_bytes(key_pem(key))
            os.chmod(target, 0o600)

    def write_info(self, origin: str) -> None:
        info = {
            "origin": origin,
            "cert_url": f"{origin}/echo.api/{CHAIN_FILE}",
            "test_ca": str(self.file(ROOT_FILE).resolve()),
        }
        self.file(INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")

    def signer(self) -> Any:
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        from simulators.alexa import RequestSigner, SigningCertificate

        info = self.info()
        chain = self.file(CHAIN_FILE).read_bytes()
        key = serialization.load_pem_private_key(self.file(KEY_FILE).read_bytes(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return RequestSigner(
            SigningCertificate(x509.load_pem_x509_certificate(chain), key, chain), info["cert_url"]
        )


def cmd_simulate_alexa_ca(args: argparse.Namespace) -> None:
    import ssl

    from aiohttp import web

    folder = CaFolder(Path(args.out))
    if args.new or not folder.usable():
        folder.create(args.host)
        print(f"made a new test CA in {folder.path}", flush=True)
    origin = f"https://{args.host}:{args.port}"
    folder.write_info(origin)
    chain = folder.file(CHAIN_FILE).read_bytes()

    async def serve_chain(request: web.Request) -> web.Response:
        return web.Response(body=chain, content_type="application/x-pem-file")

    async def main() -> None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(folder.file(TLS_CERT_FILE)), str(folder.file(TLS_KEY_FILE)))
        app = web.Application()
        app.router.add_get(f"/echo.api/{CHAIN_FILE}", serve_chain)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, args.host, args.port, ssl_context=context).start()
            root = folder.file(ROOT_FILE).resolve()
            print(f"serving the test certificate chain at {origin}/echo.api/{CHAIN_FILE}", flush=True)
            print("TESTING ONLY. Start the bridge with (or put under alexa: in its config):", flush=True)
            print("  TELECARE_ALEXA__ENABLED=true", flush=True)
            print(f"  TELECARE_ALEXA__SKILL_ID={args.skill_id}", flush=True)
            print(f"  TELECARE_ALEXA__TEST_CA={root}", flush=True)
            print(f"  TELECARE_ALEXA__TEST_CERT_ORIGIN={origin}", flush=True)
            print("keep this running while you simulate (Ctrl-C to stop)", flush=True)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        run_until_signal(main)
    except OSError as exc:
        fail(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}", EXIT_FAILED)


def cmd_simulate_alexa(args: argparse.Namespace) -> None:
    import aiohttp

    from simulators.alexa import AlexaEndpointError, build_for_utterance, post_envelope

    config = load(args)
    skill_id = args.skill_id or config.alexa.skill_id or DEFAULT_TEST_SKILL_ID
    url = args.url or f"http://{config.http.host}:{config.http.port}/alexa"
    signer = CaFolder(Path(args.ca_dir)).signer()
    envelope = build_for_utterance(
        args.utterance, device_id=args.device_id, user_id=args.user_id, skill_id=skill_id, locale=args.locale
    )
    request = envelope["request"]
    print(f"'{args.utterance}' -> {request.get('intent', {}).get('name', request['type'])}", flush=True)
    try:
        reply = asyncio.run(post_envelope(url, envelope, signer=signer))
    except AlexaEndpointError as exc:
        print(f"the bridge refused it: HTTP {exc.status} {exc.body[:300]}", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        print(f"cannot reach {url}: {exc!r} (is the bridge running with alexa.enabled?)", file=sys.stderr)
        raise SystemExit(EXIT_FAILED) from None
    response = reply.get("response", {})
    ssml = (response.get("outputSpeech") or {}).get("ssml", "")
    print(f"Alexa says: {re.sub(r'<[^>]+>', '', ssml) or '(nothing)'}", flush=True)
    if response.get("shouldEndSession") is False:
        print("(the session stays open for an answer)", flush=True)


# -- parser ----------------------------------------------------------------------------------------
def register(sub: Any, common: argparse.ArgumentParser, simulate: Any = None) -> None:
    """Add ``alexa ...`` to the top-level subcommands and ``alexa``/``alexa-ca`` to ``simulate``."""
    alexa = sub.add_parser("alexa", help="link Echo devices to residents; daily check-ins").add_subparsers(
        dest="alexa_command", metavar="ACTION", required=True
    )
    p = alexa.add_parser(
        "link",
        parents=[common],
        help="link an Echo to a resident",
        description="Create or update an Echo (device of kind alexa) linked to a resident. "
        "The Alexa device id is logged by the bridge for every request from an "
        "unlinked Echo (say 'Alexa, ask care alarm to check in').",
    )
    p.add_argument(
        "--device-id", required=True, help="our id for the Echo (1-64 of A-Za-z0-9._-, not . or ..)"
    )
    p.add_argument(
        "--alexa-device-id", required=True, help="context.System.device.deviceId (amzn1.ask.device...)"
    )
    p.add_argument("--resident", required=True, metavar="RESIDENT_ID", help="the resident it belongs to")
    p.add_argument("--alexa-user-id", help="context.System.user.userId, kept for reference")
    p.add_argument("--resident-name", metavar="NAME", help="create (or rename) the resident as well")
    p.set_defaults(func=cmd_link)
    p = alexa.add_parser("unlink", parents=[common], help="remove an Echo link")
    p.add_argument("--device-id", required=True)
    p.set_defaults(func=cmd_unlink)
    p = alexa.add_parser("links", parents=[common], help="list Echo links")
    p.set_defaults(func=cmd_links)
    p = alexa.add_parser(
        "check-in",
        parents=[common],
        help="set or remove a resident's daily check-in",
        description="A resident who has not said 'I'm okay' to Alexa by the deadline "
        "(local time) raises an inactivity alert, once per day.",
    )
    p.add_argument("--resident", required=True, metavar="RESIDENT_ID")
    p.add_argument("--deadline", metavar="HH:MM", help="latest check-in time, 24-hour (for example 10:00)")
    p.add_argument("--timezone", default="Europe/London", help="IANA time zone (default Europe/London)")
    p.add_argument("--off", action="store_true", help="remove the daily check-in")
    p.set_defaults(func=cmd_check_in)
    if simulate is None:
        return
    p = simulate.add_parser(
        "alexa-ca",
        parents=[common],
        help="a test CA for Alexa requests, serving its chain (testing only)",
        description="Make (or reuse) a test certificate authority and request-signing certificate "
        "in a folder, "
        "serve the chain over HTTPS, and print the alexa.* settings the bridge needs to trust it.",
    )
    p.add_argument("--out", default=DEFAULT_CA_DIR, metavar="DIR", help=f"folder (default {DEFAULT_CA_DIR})")
    p.add_argument("--host", default="127.0.0.1", help="address to serve on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=DEFAULT_CA_PORT, help=f"HTTPS port (default {DEFAULT_CA_PORT})"
    )
    p.add_argument("--skill-id", default=DEFAULT_TEST_SKILL_ID, help="skill id to print in the settings")
    p.add_argument("--new", action="store_true", help="make a fresh CA even if the folder has a usable one")
    p.set_defaults(func=cmd_simulate_alexa_ca)
    p = simulate.add_parser(
        "alexa",
        parents=[common],
        help="say something to the Care Alarm skill",
        description="Match an utterance to an intent with the interaction model, build a real request "
        "envelope, sign it with the test CA from 'simulate alexa-ca', and post it to /alexa.",
    )
    p.add_argument("utterance", help='what the resident says, e.g. "trigger help" or "is help coming"')
    p.add_argument("--device-id", required=True, metavar="ECHO_ID", help="the Alexa device id to send")
    p.add_argument("--user-id", default="amzn1.ask.account.SIMULATED", help="the Alexa user id to send")
    p.add_argument("--url", help="the skill endpoint (default http://{http.host}:{http.port}/alexa)")
    p.add_argument("--skill-id", help="applicationId to send (default alexa.skill_id, else the test id)")
    p.add_argument(
        "--ca-dir", default=DEFAULT_CA_DIR, metavar="DIR", help=f"test CA folder (default {DEFAULT_CA_DIR})"
    )
    p.add_argument("--locale", default="en-GB", choices=["en-GB", "en-US"])
    p.set_defaults(func=cmd_simulate_alexa)
