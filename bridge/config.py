"""Configuration: ``config.yaml`` plus ``TELECARE_`` environment overrides, validated by pydantic.

Every key is documented in the shipped ``config.yaml``. A wrong key or value raises :class:`ConfigError`
naming the key and where it came from (the file, or the environment variable).
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from alarm_centre.escalation.policy import PolicyStep, parse_steps
from alarm_centre.telephony.settings import dialable
from devices.dc09 import parse_key
from devices.dc09_forward import parse_upstream_url
from devices.numbers import whole_number
from devices.phone import EMERGENCY_NUMBERS, is_e164
from devices.registry import DC09_ACCOUNT_RE, DC09_KEY_RULE
from devices.vocabulary import PRIORITIES

ENV_PREFIX = "TELECARE_"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpConfig(Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    #: Largest request body accepted, in bytes.
    max_body_bytes: int = Field(65536, ge=1024, le=16 * 1024 * 1024)
    #: The address people and Twilio reach the bridge at (for links and webhook signatures).
    public_url: str = ""
    #: A connection with no request in progress (just opened, between requests, or still sending its
    #: headers) is closed after this many seconds.
    idle_timeout_s: float = Field(60.0, gt=0, le=3600)
    #: A request's body must arrive in full within this many seconds, or it is answered 408 and closed.
    body_timeout_s: float = Field(30.0, gt=0, le=3600)
    #: Reverse proxies (addresses or CIDR networks) whose X-Forwarded-For names the client. Empty: the
    #: peer is the client and X-Forwarded-For is ignored.
    trusted_proxies: list[str] = Field(default_factory=list, max_length=100)

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or network (like 10.0.0.0/24)") from None
        return [entry.strip() for entry in value]


class MqttConfig(Section):
    url: str = ""
    embedded_port: int = Field(18830, ge=0, le=65535)
    #: Let clients without credentials onto the embedded broker (demo only), with a unit's rights.
    embedded_allow_anonymous: bool = False
    client_id: str = ""
    shared_group: str = ""
    keepalive: int = Field(30, ge=5, le=3600)
    max_in_flight: int = Field(2000, ge=1, le=100_000)
    reconnect_max_s: float = Field(0.5, gt=0, le=600)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if value and not value.startswith(("mqtt://", "mqtts://", "tcp://")):
            raise ValueError("must be empty (embedded broker) or start with mqtt:// or mqtts://")
        return value


class StoreConfig(Section):
    url: str = "./data/telecare.db"

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value:
            raise ValueError("must be a SQLite path or a postgresql:// URL")
        return value


class LogConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class OutboxConfig(Section):
    #: How often the outbox is checked for retries when nothing wakes it.
    poll_s: float = Field(1.0, gt=0, le=60)


class ConsoleConfig(Section):
    #: Serve the operator console (/console, /login) and accept session cookies on the API.
    enabled: bool = True
    #: A session ends this many seconds after sign-in, however busy (one shift plus handover).
    session_ttl_s: float = Field(43200.0, ge=1, le=7 * 86400)
    #: A session ends after this many seconds without a request (an open live queue counts as activity).
    idle_timeout_s: float = Field(1800.0, ge=1, le=86400)
    #: Mark cookies Secure. None (null): only when http.public_url starts with https://.
    secure_cookies: bool | None = None
    #: Failed sign-ins for one name from one address before that address backs off (1 s, 2 s, 4 s, ...),
    #: and from all addresses together before every answer for the name is slowed (never refused).
    login_max_failures: int = Field(5, ge=1, le=1000)
    #: Failed sign-ins from one client address (any names) before that address backs off.
    login_max_failures_per_address: int = Field(20, ge=1, le=100_000)
    #: Failures are forgotten this many seconds after the last one; also the longest back-off.
    login_window_s: float = Field(300.0, ge=1, le=86400)
    #: The longest an answer for a much-guessed name is held back (seconds).
    login_max_delay_s: float = Field(10.0, ge=0, le=60)
    #: Play a tone when a new alert arrives (each operator can switch it off on their screen).
    sound: bool = True


class AlexaConfig(Section):
    """The voice path: ``POST /alexa`` and daily check-ins (see docs/alexa.md)."""

    enabled: bool = False
    #: The skill id from the Alexa developer console (amzn1.ask.skill....); required when enabled.
    skill_id: str = ""
    #: TESTING ONLY: a PEM root CA to trust as well as the system roots (the simulator's test CA).
    test_ca: str = ""
    #: TESTING ONLY (needs test_ca): https://host:port that certificate URLs may use instead of S3.
    test_cert_origin: str = ""
    #: Seconds to wait for a certificate chain download.
    fetch_timeout: float = Field(5.0, gt=0, le=60)
    #: Largest Alexa request body accepted, in bytes (larger: 413).
    max_body_bytes: int = Field(131072, ge=4096, le=1024 * 1024)
    #: How often, in seconds, missed daily check-ins are looked for.
    check_in_poll_s: float = Field(30.0, gt=0, le=3600)

    @field_validator("test_cert_origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        if value and not value.startswith("https://"):
            raise ValueError("must be empty or https://host:port")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> AlexaConfig:
        if self.test_cert_origin and not self.test_ca:
            raise ValueError("test_cert_origin may only be set together with test_ca (testing only)")
        if self.enabled and not self.skill_id:
            raise ValueError("skill_id is required when alexa.enabled is true")
        return self


class TwilioConfig(Section):
    """SMS and voice calls through Twilio, and its webhooks /twilio/* (see docs/twilio.md)."""

    #: false: nothing is sent and /twilio/* answers 404.
    enabled: bool = False
    account_sid: str = ""
    auth_token: str = ""
    #: The Twilio number texts and calls come from (E.164).
    from_number: str = ""
    #: Empty: real Twilio. Otherwise the REST base URL (the local simulator).
    base_url: str = ""
    #: The URL Twilio reaches the bridge at (webhook signatures); empty: http.public_url, else the bridge.
    public_url: str = ""
    #: The supervisors on duty, texted and called by escalation steps with ``to: supervisors``.
    supervisor_numbers: list[str] = Field(default_factory=list, max_length=20)
    request_timeout: float = Field(10.0, gt=0, le=120)
    max_attempts: int = Field(3, ge=1, le=10)
    language: str = Field("en-GB", min_length=2, max_length=16)
    replay_window: float = Field(3600.0, ge=60, le=7 * 86400)

    @field_validator("from_number", mode="before")
    @classmethod
    def _number_text(cls, value: Any) -> Any:
        # YAML (and so TELECARE_TWILIO__FROM_NUMBER=+44...) reads an unquoted +441632960000 as a number.
        return f"+{value}" if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("supervisor_numbers", mode="before")
    @classmethod
    def _numbers_text(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [f"+{v}" if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value

    @field_validator("supervisor_numbers")
    @classmethod
    def _numbers(cls, value: list[str]) -> list[str]:
        bad = [n for n in value if not is_e164(n)]
        if bad:
            raise ValueError(f"must be E.164 numbers like +447700900123, not {bad[0]!r}")
        return value

    @field_validator("base_url", "public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or an http(s):// URL")
        return value

    @model_validator(mode="after")
    def _complete(self) -> TwilioConfig:
        if self.enabled:
            if not self.account_sid or not self.auth_token:
                raise ValueError("account_sid and auth_token are required when twilio.enabled is true")
            if not is_e164(self.from_number):
                raise ValueError("from_number must be an E.164 number when twilio.enabled is true")
        return self


def _default_policies() -> dict[int, list[PolicyStep]]:
    return {
        1: parse_steps(
            [
                {"after_s": 30, "action": "highlight"},
                {"after_s": 60, "action": "sms"},
                {"after_s": 120, "action": "call"},
            ]
        ),
        2: parse_steps([{"after_s": 60, "action": "highlight"}, {"after_s": 180, "action": "sms"}]),
        3: [],
    }


class EscalationConfig(Section):
    """Escalation of unacknowledged alerts and responder call-outs (see docs/escalation.md)."""

    enabled: bool = True
    #: Steps per priority; snapshotted onto each alert when it is raised. Each step is checked by
    #: :func:`alarm_centre.escalation.policy.parse_steps`, the same check as the policy API.
    policies: dict[int, list[PolicyStep]] = Field(default_factory=_default_policies)
    #: Seconds a responder has to accept (YES / key 1) before the next one is contacted.
    responder_wait_s: float = Field(120.0, gt=0, le=3600)
    #: Delays before retrying a failed SMS or call, one per attempt (the last repeats).
    retry_s: list[float] = Field(default_factory=lambda: [30.0, 120.0, 300.0], min_length=1)
    #: Attempts per SMS or call before giving up (each attempt already retries quick failures).
    max_attempts: int = Field(4, ge=1, le=20)
    #: How long a node holds a claimed notification before another may retry it.
    lease_s: float = Field(60.0, gt=0, le=3600)
    #: Longest sleep of the escalation loop between checks, in seconds.
    poll_s: float = Field(1.0, gt=0, le=60)
    #: Time zone of the service-level days.
    timezone: str = "UTC"

    @field_validator("policies", mode="before")
    @classmethod
    def _policies(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        checked: dict[Any, list[PolicyStep]] = {}
        for priority, steps in value.items():
            number = priority if isinstance(priority, int) else whole_number(str(priority))
            if number not in PRIORITIES:
                raise ValueError(f"alert priorities are {', '.join(map(str, PRIORITIES))}")
            try:
                checked[number] = parse_steps(list(steps) if isinstance(steps, tuple) else steps)
            except ValueError as exc:
                raise ValueError(f"priority {number}: {exc}") from None
        return checked

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (for example UTC or Europe/London)") from None
        return value


# -- telephony (issue 15): the centre's calls, on Twilio Programmable Voice (docs/telephony.md) ----------
def _e164_text(value: Any) -> Any:
    """YAML (and so an environment variable) reads an unquoted +441632960000 as a number: put the + back."""
    return f"+{value}" if isinstance(value, int) and not isinstance(value, bool) else value


class TelephonyOperator(Section):
    """How one operator (a console user name) is reached: a phone, or the console in the browser."""

    #: The operator's phone (E.164): calls offered to them ring there.
    phone: str = ""
    #: Ring the console in the browser through Twilio's Voice SDK (needs telephony.voice_sdk).
    browser: bool = False

    @field_validator("phone", mode="before")
    @classmethod
    def _phone_text(cls, value: Any) -> Any:
        return _e164_text(value)

    @model_validator(mode="after")
    def _one_way(self) -> TelephonyOperator:
        if bool(self.phone) == self.browser:
            raise ValueError("give either phone (E.164) or browser: true")
        if self.phone and not is_e164(self.phone):
            raise ValueError(f"phone must be an E.164 number like +447700900123, not {self.phone[:30]!r}")
        return self


class VoiceSdkConfig(Section):
    """Access tokens for operators whose console rings in the browser (Twilio Voice SDK)."""

    #: An API key of the account (SK...) and its secret: they sign the access tokens.
    api_key_sid: str = ""
    api_key_secret: SecretStr = SecretStr("")
    #: The TwiML app (AP...) outgoing browser calls use; empty: the browser only takes calls.
    twiml_app_sid: str = ""
    #: Seconds an access token lasts (the console fetches a new one before it runs out).
    token_ttl_s: int = Field(3600, ge=60, le=86400)
    #: The Voice SDK's JavaScript file (twilio.min.js) on this machine, served to the console from
    #: this bridge (the console loads no script from elsewhere). Empty: no browser audio.
    sdk_file: str = ""


class TelephonyConfig(Section):
    """The centre's calls: units' and residents' calls in, operators' calls out (docs/telephony.md)."""

    #: Take calls at POST /twilio/voice (Direction=inbound) and let operators dial from the alert card.
    enabled: bool = False
    #: The centre's numbers that units and residents call (E.164; Twilio numbers pointed at the bridge).
    numbers: list[str] = Field(default_factory=list, max_length=50)
    #: Operators who take calls, by console user name: {phone: "+44..."} or {browser: true}.
    operators: dict[str, TelephonyOperator] = Field(default_factory=dict, max_length=500)
    #: Seconds a call rings one operator before it is offered to the next.
    ring_s: float = Field(20.0, ge=5, le=120)
    #: Seconds after which a call nobody answered goes to the overflow number.
    overflow_after_s: float = Field(60.0, ge=5, le=3600)
    #: The partner centre's number for calls nobody here answers (E.164). Empty: keep ringing here.
    overflow_number: str = ""
    #: Record calls (inbound and outbound, each as one conference recording).
    record: bool = True
    #: Said to the caller (and to each party dialled) before the call is joined; empty: nothing.
    recording_announcement: str = Field("This call is recorded.", max_length=500)
    #: Days a recording is kept; then it is deleted at Twilio and here.
    retention_days: int = Field(90, ge=1, le=3650)
    #: The emergency number operators dial from the alert card (999, 112, 911, or an E.164 number).
    emergency_number: str = "999"
    #: Calls a handler's monthly call audit draws (at least 2; one with the emergency services if any).
    audit_calls_per_handler: int = Field(2, ge=2, le=20)
    #: Hold music while a caller waits (Twilio's waitUrl); empty: Twilio's default music.
    hold_music_url: str = ""
    #: Longest sleep, in seconds, of the telephony loop (offer timeouts, overflow, retention).
    poll_s: float = Field(1.0, gt=0, le=60)
    voice_sdk: VoiceSdkConfig = VoiceSdkConfig()

    @field_validator("numbers", mode="before")
    @classmethod
    def _numbers_text(cls, value: Any) -> Any:
        return [_e164_text(n) for n in value] if isinstance(value, list) else value

    @field_validator("overflow_number", "emergency_number", mode="before")
    @classmethod
    def _number_text(cls, value: Any) -> Any:
        return _e164_text(value)

    @field_validator("numbers")
    @classmethod
    def _numbers(cls, value: list[str]) -> list[str]:
        bad = [n for n in value if not is_e164(n)]
        if bad:
            raise ValueError(f"must be E.164 numbers like +441632960001, not {bad[0][:30]!r}")
        return value

    @field_validator("overflow_number")
    @classmethod
    def _overflow(cls, value: str) -> str:
        if value and not is_e164(value):
            raise ValueError(f"must be empty or an E.164 number, not {value[:30]!r}")
        return value

    @field_validator("emergency_number")
    @classmethod
    def _emergency(cls, value: str) -> str:
        if not dialable(value):
            raise ValueError(f"must be one of {', '.join(sorted(EMERGENCY_NUMBERS))} or an E.164 number")
        return value

    @field_validator("operators")
    @classmethod
    def _operator_names(cls, value: dict[str, TelephonyOperator]) -> dict[str, TelephonyOperator]:
        bad = [name for name in value if not re.fullmatch(r"[^\s/]{1,64}", name)]
        if bad:
            raise ValueError(f"operator names are console user names (1-64 characters), not {bad[0][:30]!r}")
        return value

    @field_validator("hold_music_url")
    @classmethod
    def _hold_url(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must be empty or an http(s):// URL")
        return value

    @model_validator(mode="after")
    def _complete(self) -> TelephonyConfig:
        if self.enabled and not self.numbers:
            raise ValueError("numbers: at least one centre number is needed when telephony.enabled is true")
        browser = [name for name, op in self.operators.items() if op.browser]
        sdk = self.voice_sdk
        if browser and not (sdk.api_key_sid and sdk.api_key_secret.get_secret_value()):
            raise ValueError(
                f"operator {browser[0]!r} takes calls in the browser: set voice_sdk.api_key_sid and "
                "voice_sdk.api_key_secret"
            )
        return self


class SerialUnitConfig(Section):
    """One serial line carrying the unit protocol (docs/serial-and-gsm.md)."""

    #: Device path (/dev/serial/by-id/...), a pty, or a pyserial URL such as socket://host:port.
    port: str = Field(min_length=1)
    baudrate: int = Field(9600, ge=50, le=4_000_000)
    #: Hardware flow control (RTS/CTS).
    rtscts: bool = False
    #: Software flow control (XON/XOFF); not together with rtscts.
    xonxoff: bool = False

    @model_validator(mode="after")
    def _one_flow_control(self) -> SerialUnitConfig:
        if self.rtscts and self.xonxoff:
            raise ValueError("choose rtscts or xonxoff, not both")
        return self


class SerialConfig(Section):
    """Directly attached units: one entry per serial line (empty: none)."""

    units: list[SerialUnitConfig] = []

    @field_validator("units")
    @classmethod
    def _distinct(cls, units: list[SerialUnitConfig]) -> list[SerialUnitConfig]:
        ports = [u.port for u in units]
        if len(set(ports)) != len(ports):
            raise ValueError("each port may be listed once")
        return units


class GsmConfig(Section):
    """A GSM modem receiving SMS alarms and sending unit commands by SMS (docs/serial-and-gsm.md)."""

    #: Empty: no modem.
    port: str = ""
    baudrate: int = Field(115200, ge=1200, le=4_000_000)
    rtscts: bool = False
    xonxoff: bool = False
    #: Seconds between signal (AT+CSQ) and registration (AT+CREG?) polls.
    poll_interval_s: float = Field(30.0, gt=0, le=3600)
    #: Seconds a modem may take to answer a command before it is initialised again.
    command_timeout_s: float = Field(5.0, gt=0, le=120)
    #: Country calling code for senders written nationally (07700 900123 -> +44 7700 900123).
    country_code: str = Field("44", pattern=r"^[1-9][0-9]{0,2}$")

    @model_validator(mode="after")
    def _one_flow_control(self) -> GsmConfig:
        if self.rtscts and self.xonxoff:
            raise ValueError("choose rtscts or xonxoff, not both")
        return self


class Dc09ForwardPath(Section):
    """One upstream monitoring centre's receiver (``dc09.forward`` entry; docs/dc09.md, "Forwarding")."""

    #: ``tcp://host:port`` or ``udp://host:port`` of the centre's DC-09 receiver.
    url: str
    #: The account this bridge reports as on this path (3-16 hex); a resident's own ``dc09_account``
    #: goes in its alerts' frames instead when set.
    account: str
    #: AES key agreed with the centre: 16/24/32 characters or 32/48/64 hex digits. A secret: never
    #: logged or printed (``check-config`` shows ``***``).
    key: SecretStr | None = None
    #: Receiver and line numbers (1-6 hex), as the centre assigned them. ``receiver: ""`` sends no R
    #: field (pysiaalarm-based receivers then answer ``None`` in its place, which no frame allows).
    receiver: str = "0"
    line: str = "0"
    #: ``ADM-CID`` (Contact ID) or ``SIA-DCS``.
    payload: Literal["ADM-CID", "SIA-DCS"] = "ADM-CID"
    #: Seconds between link tests (``NULL``); a path with no answer for longer raises a technical alert.
    link_test_s: float = Field(60.0, ge=1, le=86400)
    #: Seconds to wait for the centre's answer to one frame.
    ack_timeout_s: float = Field(5.0, gt=0, le=120)
    #: Name on the timeline, in metrics and in the path-down alert's device id ``dc09-forward-<name>``;
    #: empty: ``primary`` for the first path, ``backup`` for the second, ``backup-<n>`` after.
    name: str = Field("", pattern=r"^$|^[a-z0-9][a-z0-9-]{0,31}$")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_upstream_url(value)
        return value

    @field_validator("account")
    @classmethod
    def _account(cls, value: str) -> str:
        if not DC09_ACCOUNT_RE.fullmatch(value):
            raise ValueError("a DC-09 account is 3-16 hex digits")
        return value.upper()

    @field_validator("key")
    @classmethod
    def _key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        try:
            parse_key(value.get_secret_value())
        except ValueError:
            raise ValueError(DC09_KEY_RULE) from None  # never echo the value: it is a secret
        return value

    @field_validator("receiver", "line")
    @classmethod
    def _hex(cls, value: str, info: Any) -> str:
        if value == "" and info.field_name == "receiver":
            return value
        if not re.fullmatch(r"[0-9A-Fa-f]{1,6}", value):
            raise ValueError(f"the {info.field_name} number is 1-6 hex digits")
        return value.upper()


class Dc09Config(Section):
    """SIA DC-09: alarm panels and IP units reporting over TCP and UDP (docs/dc09.md)."""

    #: ``host:port`` served on TCP and UDP alike; empty: no DC-09 receiver. Port 0 picks a free port.
    listen: str = Field("", pattern=r"^$|^\S+:[0-9]{1,5}$")
    #: A frame's timestamp may be this many seconds old ...
    old_s: float = Field(40.0, gt=0, le=3600)
    #: ... or this many seconds ahead of the bridge's clock; other frames are NAKed with our time.
    ahead_s: float = Field(20.0, gt=0, le=3600)
    #: Upstream monitoring centres' receivers to forward every alert and restore to, in order: the first
    #: is the primary path, the next the backup. Empty: no forwarding.
    forward: list[Dc09ForwardPath] = Field(default_factory=list, max_length=8)
    #: How often the forwarder looks for work and due link tests, in seconds (it is also woken by
    #: every commit that queues a forward).
    forward_poll_s: float = Field(1.0, gt=0, le=60)
    #: At most this many TCP connections at once; one more is closed on arrival (docs/dc09.md, "Limits").
    max_connections: int = Field(1000, ge=1, le=100_000)
    #: A connection that sends nothing (or does not read our answers) for this many seconds is closed.
    idle_s: float = Field(600.0, gt=0, le=86_400)
    #: At most this many UDP datagrams handled at once; one more is dropped (the unit resends).
    max_datagrams: int = Field(256, ge=1, le=100_000)

    @model_validator(mode="after")
    def _path_names(self) -> Self:
        for index, path in enumerate(self.forward):
            if not path.name:
                path.name = "primary" if index == 0 else "backup" if index == 1 else f"backup-{index}"
        names = [p.name for p in self.forward]
        if len(set(names)) != len(names):
            raise ValueError("dc09.forward: every path needs its own name")
        return self

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port (the host may be an IPv6 address in brackets)."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ScaipConfig(Section):
    """SCAIP: social alarms sending SIP MESSAGEs with application/scaip+xml bodies (docs/scaip.md)."""

    #: ``host:port`` served on UDP and TCP alike; empty: no SCAIP receiver. Port 0 picks a free port.
    listen: str = Field("", pattern=r"^$|^\S+:[0-9]{1,5}$")
    #: ``host:port`` for SIP over TLS (SIPS, usually port 5061); needs ``tls_cert`` and ``tls_key``.
    tls_listen: str = Field("", pattern=r"^$|^\S+:[0-9]{1,5}$")
    #: PEM files of the receiver's certificate (chain) and private key.
    tls_cert: str = ""
    tls_key: str = ""
    #: Where a unit is told to open its speech call after an alarm: a number (``gsm:+44...``,
    #: ``+44...``) or SIP URI (``sip:arc@example.org``). Empty: the receiver configured in the unit.
    call_receiver: str = Field("", max_length=100)
    #: How units without a setting of their own get the answer (``mrs``): ``in_200`` in the 200 OK's
    #: body, or ``message``: an empty 200 OK, then a MESSAGE back to the unit.
    answer: Literal["in_200", "message"] = "in_200"
    #: Realm of the digest challenge sent to units that have SIP credentials.
    realm: str = Field("telecare", pattern=r"^[A-Za-z0-9.:_-]{1,64}$")
    #: At most this many TCP and TLS connections at once; one more is closed (docs/scaip.md, "Limits").
    max_connections: int = Field(1000, ge=1, le=100_000)
    #: A connection that sends nothing (or does not read our answers) for this many seconds is closed.
    idle_s: float = Field(600.0, gt=0, le=86_400)
    #: At most this many UDP datagrams handled at once; one more is dropped (the unit resends).
    max_datagrams: int = Field(256, ge=1, le=100_000)

    @property
    def host_port(self) -> tuple[str, int]:
        """``listen`` split into host and port (the host may be an IPv6 address in brackets)."""
        return _host_port(self.listen)

    @property
    def tls_host_port(self) -> tuple[str, int]:
        return _host_port(self.tls_listen)

    @model_validator(mode="after")
    def _tls_complete(self) -> ScaipConfig:
        if self.tls_listen and not (self.tls_cert and self.tls_key):
            raise ValueError("tls_listen needs tls_cert and tls_key")
        if self.tls_listen and not self.listen:
            raise ValueError("tls_listen needs listen (UDP and TCP) as well")
        return self


def _host_port(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class RegistryConfig(Section):
    """Installers' registry, commissioning and heartbeat supervision."""

    #: Minutes a unit stays in test mode when a commissioning visit does not say.
    commissioning_minutes: float = Field(30.0, gt=0, le=240)
    #: The longest test mode an installer may ask for, in minutes.
    max_commissioning_minutes: float = Field(240.0, gt=0, le=1440)


class HeartbeatsConfig(Section):
    #: Supervise units' heartbeats and raise no_heartbeat (priority 2) for a unit that goes silent.
    enabled: bool = True
    #: Heartbeat interval of a unit that has none of its own, in seconds.
    default_interval_s: int = Field(900, ge=10, le=7 * 86400)
    #: Extra seconds allowed after a missed heartbeat, for a unit that has no grace of its own.
    default_grace_s: int = Field(120, ge=0, le=86400)
    #: How often late units are looked for (one indexed query), in seconds.
    check_every_s: float = Field(5.0, gt=0, le=600)
    #: Late units handled per query.
    batch: int = Field(1000, ge=1, le=100_000)


class CredentialsConfig(Section):
    #: Issue a broker password per unit and write Mosquitto's password and ACL files.
    enabled: bool = False
    #: Mosquitto password_file the bridge writes (mosquitto.conf: password_file PATH).
    password_file: str = "./data/mosquitto.passwd"
    #: Mosquitto acl_file the bridge writes (mosquitto.conf: acl_file PATH).
    acl_file: str = "./data/mosquitto.acl"
    #: Group given read access to both files (mode 0640), e.g. mosquitto; empty keeps the bridge's own group.
    file_group: str = ""
    #: The bridge's own broker user (full access to the topic tree).
    bridge_username: str = Field("telecare-bridge", pattern=r"^[A-Za-z0-9._-]{1,64}$")
    #: The bridge's own broker password; empty means the password in mqtt.url.
    bridge_password: str = ""
    #: Command run after the files change so the broker rereads them; empty means none.
    reload_command: str = ""
    #: PBKDF2 iterations of each password hash (Mosquitto's default is 101).
    iterations: int = Field(101, ge=1, le=1_000_000)


class FloodsConfig(Section):
    """Alarm floods: many units' technical alarms of one type grouped into one incident."""

    #: Group floods into incidents (GET /api/v1/incidents, /api/v1/queue). Help types are never grouped.
    enabled: bool = True
    #: This many alerts of one type raised within window_s open an incident.
    threshold: int = Field(20, ge=2, le=1_000_000)
    #: The window, in seconds, the threshold is counted over.
    window_s: float = Field(60.0, gt=0, le=86400)
    #: Event types that may be grouped (technical or urgent types only; help types are refused).
    types: list[str] = Field(
        default_factory=lambda: ["low_battery", "mains_fail", "tamper", "sensor_fault", "radio_jamming"]
    )

    @field_validator("types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        from alarm_centre.floods.model import check_types

        return check_types(value)


class RetentionConfig(Section):
    """How long each kind of record is kept, and the job that deletes or anonymises it after
    (docs/data-protection.md)."""

    #: Run the retention job (``false``: nothing is ever deleted by it).
    enabled: bool = True
    #: Seconds between runs (a failed run is tried again sooner, backing off up to this).
    check_every_s: float = Field(3600.0, ge=60, le=7 * 86400)
    #: Records deleted or anonymised per transaction.
    batch: int = Field(1000, ge=1, le=100_000)
    #: Days kept per kind of record (``bridge/retention_kinds.py``); ``null`` keeps a kind for ever; a kind
    #: not listed keeps its default.
    days: dict[str, int | None] = Field(default_factory=dict)

    @field_validator("days")
    @classmethod
    def _kinds(cls, value: dict[str, int | None]) -> dict[str, int | None]:
        from bridge.retention_kinds import kind_names

        known = kind_names()
        for kind, days in value.items():
            if kind not in known:
                raise ValueError(f"{kind!r} is not a kind of record (kinds: {', '.join(known)})")
            if days is not None and not 1 <= days <= 36500:
                raise ValueError(f"{kind}: days must be 1 to 36500, or null to keep for ever")
        return value


class Config(Section):
    #: This bridge node's name in logs and metrics; empty means the host name.
    node_id: str = ""
    topic_root: str = Field("telecare", pattern=r"^[A-Za-z0-9_-][A-Za-z0-9_/-]{0,63}$")
    http: HttpConfig = HttpConfig()
    mqtt: MqttConfig = MqttConfig()
    store: StoreConfig = StoreConfig()
    outbox: OutboxConfig = OutboxConfig()
    log: LogConfig = LogConfig()
    floods: FloodsConfig = FloodsConfig()
    console: ConsoleConfig = ConsoleConfig()
    alexa: AlexaConfig = AlexaConfig()
    serial: SerialConfig = SerialConfig()
    gsm: GsmConfig = GsmConfig()
    twilio: TwilioConfig = TwilioConfig()
    escalation: EscalationConfig = EscalationConfig()
    telephony: TelephonyConfig = TelephonyConfig()
    registry: RegistryConfig = RegistryConfig()
    heartbeats: HeartbeatsConfig = HeartbeatsConfig()
    credentials: CredentialsConfig = CredentialsConfig()
    dc09: Dc09Config = Dc09Config()
    scaip: ScaipConfig = ScaipConfig()
    retention: RetentionConfig = RetentionConfig()

    @model_validator(mode="after")
    def _telephony_needs_twilio(self) -> Config:
        if self.telephony.enabled and not self.twilio.enabled:
            raise ValueError(
                "telephony.enabled needs twilio.enabled (the calls go through the Twilio account)"
            )
        return self

    @property
    def node_name(self) -> str:
        return self.node_id or socket.gethostname()


class ConfigError(Exception):
    """A configuration problem, with the key and where the bad value came from."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    found: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == "TELECARE_CONFIG":
            continue
        path = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__") if part)
        if not path:
            continue
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, (dict, list)) and not raw.strip().startswith(("{", "[")):
            value = raw
        # Keep strings like "0123" and URLs as written; YAML only decides numbers, booleans and lists.
        if isinstance(value, (int, float, bool)) or value is None or isinstance(value, (dict, list)):
            found[path] = (name, value)
        else:
            found[path] = (name, raw)
    return found


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def load_config(path: str | Path | None = None, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read the file (if any), apply environment overrides, validate. Raises ConfigError."""
    environ = os.environ if environ is None else environ
    file_label = "built-in defaults"
    tree: dict[str, Any] = {}
    if path is not None:
        file_path = Path(path)
        file_label = str(file_path)
        try:
            text = file_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError([f"config file {file_path} does not exist"]) from None
        except OSError as exc:
            raise ConfigError([f"config file {file_path} cannot be read: {exc.strerror}"]) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError([f"{file_path} is not valid YAML: {exc}"]) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError([f"{file_path} must hold a mapping of keys, not {type(loaded).__name__}"])
        tree = loaded
    overrides = _env_overrides(environ)
    for key_path, (_, value) in overrides.items():
        _set(tree, key_path, value)
    try:
        config = Config.model_validate(tree)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            key = ".".join(loc)
            origin = next((env for kp, (env, _) in overrides.items() if kp == loc), None)
            where = f"environment variable {origin}" if origin else file_label
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key"
            problems.append(f"{key}: {msg} (from {where})")
        raise ConfigError(problems) from None
    _anchor_paths(config, Path(path).absolute().parent if path is not None else Path.cwd(), set(overrides))
    return config


#: Keys holding file paths. A relative one is taken from the config file's directory (from the working
#: directory when it came from the environment or there is no file), so the bridge and every CLI
#: command find the same store wherever they are started.
PATH_KEYS = (
    ("store", "url"),
    ("credentials", "password_file"),
    ("credentials", "acl_file"),
    ("alexa", "test_ca"),
    ("telephony.voice_sdk", "sdk_file"),
)


def _anchor_paths(config: Config, base: Path, from_env: set[tuple[str, ...]]) -> None:
    from alarm_centre.store import sqlite_path

    for section_name, key in PATH_KEYS:
        section: Any = config
        for part in section_name.split("."):  # a nested section: "telephony.voice_sdk"
            section = getattr(section, part)
        value: str = getattr(section, key)
        if (section_name, key) == ("store", "url"):
            value = sqlite_path(value) or ""
        if not value or Path(value).is_absolute():
            continue
        anchor = Path.cwd() if (*section_name.split("."), key) in from_env else base
        setattr(section, key, os.path.normpath(anchor / value))
