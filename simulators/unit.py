"""A simulated GSM/IP telecare unit on MQTT that behaves like a real one.

It sets a will message (``offline``) on its status topic, retries each event with backoff until the
bridge acks it (surviving broker outages), answers commands with ``cmd_result`` -- and for
``call_centre`` also reports ``call_connected`` -- and can send heartbeats. It speaks wire contract v1.1
through the same codec the bridge uses: calls for help (priority 1) go on the ``alarm`` topic, the rest
on ``event``; ``alarm_lane=False`` makes it an older v1.0 unit that sends everything on ``event``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Self

import aiomqtt

from devices.cancellation import cancel_requests, honour_cancellation, stop
from devices.mqtt_codec import Topics, decode_ack, decode_command, encode_event
from devices.vocabulary import is_help, parse_event_type

log = logging.getLogger(__name__)


@dataclass
class UnitLog:
    """What the unit saw, for tests and the demo's output."""

    acks: list[dict[str, Any]] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)


class SimulatedUnit:
    def __init__(
        self,
        device_id: str,
        *,
        host: str = "127.0.0.1",
        port: int = 18830,
        topic_root: str = "telecare",
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        answer_commands: bool = True,
        heartbeat_s: float | None = None,
        call_connects: bool = True,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 30.0,
        alarm_lane: bool = True,
    ) -> None:
        self.device_id = device_id
        self._alarm_lane = alarm_lane
        self._username = username  # per-device broker credential (credentials.enabled)
        self._password = password
        self.topics = Topics(topic_root)
        self._host = host
        self._port = port
        self._retry_initial = retry_initial_s
        self._retry_max = retry_max_s
        self._answer = answer_commands
        self._heartbeat_s = heartbeat_s
        self._call_connects = call_connects
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self.log = UnitLog()
        self.command_received = asyncio.Condition()
        self._connect_timeout = connect_timeout
        #: Why the last connection attempt failed (e.g. the broker refused the credentials).
        self.last_error: str | None = None

    async def __aenter__(self) -> Self:
        self._runner = asyncio.create_task(self._run(), name=f"unit-{self.device_id}")
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._connected.wait()
        except BaseException as exc:  # timed out, or cancelled while connecting: the loop ends too
            await self.__aexit__(None, None, None)
            if isinstance(exc, TimeoutError):
                raise ConnectionError(
                    f"unit {self.device_id} could not connect to {self._host}:{self._port}: {self.last_error}"
                ) from None
            raise
        if self._heartbeat_s:
            self._spawn(self._heartbeats(self._heartbeat_s))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await stop(*self._tasks, self._runner)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        delay = 0.2
        cancels = cancel_requests()
        while True:
            will = aiomqtt.Will(self.topics.status(self.device_id), b"offline", qos=1)
            try:
                async with aiomqtt.Client(
                    self._host,
                    self._port,
                    identifier=f"unit-{self.device_id}",
                    username=self._username,
                    password=self._password,
                    will=will,
                    keepalive=15,
                    timeout=10,
                    socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
                ) as client:
                    await client.subscribe(self.topics.ack(self.device_id), qos=1)
                    await client.subscribe(self.topics.cmd(self.device_id), qos=1)
                    await client.publish(self.topics.status(self.device_id), b"online", qos=1)
                    honour_cancellation(cancels)
                    self._client = client
                    self._connected.set()
                    delay = 0.2
                    async for message in client.messages:
                        payload = message.payload
                        self._on_message(
                            message.topic.value,
                            payload if isinstance(payload, bytes) else str(payload).encode(),
                        )
            except aiomqtt.MqttError as exc:
                self.last_error = str(exc)
                log.debug("unit %s lost its broker: %s", self.device_id, exc)
            finally:
                self._client = None
                self._connected.clear()
            honour_cancellation(cancels)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic.endswith("/ack"):
            try:
                ack = decode_ack(payload)
            except (ValueError, UnicodeDecodeError):
                return
            self.log.acks.append(ack)
            fut = self._waiting.get(str(ack.get("event_id")))
            if fut is not None and not fut.done():
                fut.set_result(ack)
        elif topic.endswith("/cmd"):
            try:
                command = decode_command(payload)
            except (ValueError, UnicodeDecodeError):
                return
            self.log.commands.append(command)
            self._spawn(self._notify_command())
            if self._answer:
                self._spawn(self._answer_command(command))

    async def _notify_command(self) -> None:
        async with self.command_received:
            self.command_received.notify_all()

    async def _answer_command(self, command: dict[str, Any]) -> None:
        await self.send("cmd_result", data={"cmd_id": command["cmd_id"], "ok": True})
        if command["cmd"] == "call_centre" and self._call_connects:
            await self.send("call_connected", data={"alert_id": command.get("args", {}).get("alert_id")})

    async def send(
        self,
        event_type: str,
        *,
        test: bool = False,
        data: dict[str, Any] | None = None,
        event_id: str | None = None,
        timeout: float | None = None,
        raw: bytes | None = None,
    ) -> dict[str, Any]:
        """Send one event and retry it until the bridge acks it; returns the ack."""
        event_id = event_id or uuid.uuid4().hex[:20]
        payload = raw if raw is not None else encode_event(event_id, event_type, test=test, data=data)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[event_id] = fut
        delay = self._retry_initial
        cancels = cancel_requests()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    client = self._client
                    if client is not None:
                        self.log.attempts[event_id] = self.log.attempts.get(event_id, 0) + 1
                        with contextlib.suppress(aiomqtt.MqttError):
                            await client.publish(self.topic_for(event_type), payload, qos=1)
                        honour_cancellation(cancels)
                    # asyncio.wait neither cancels the future nor turns anything into TimeoutError: a
                    # cancellation of this task always propagates from here.
                    done, _ = await asyncio.wait((fut,), timeout=delay)
                    if done:
                        return fut.result()
                    delay = min(delay * 2, self._retry_max) * random.uniform(0.8, 1.2)
        finally:
            self._waiting.pop(event_id, None)

    def topic_for(self, event_type: str) -> str:
        """Where this unit publishes an event of ``event_type``: ``alarm`` for a call for help (v1.1)."""
        known = parse_event_type(event_type)
        if self._alarm_lane and known is not None and is_help(known):
            return self.topics.alarm(self.device_id)
        return self.topics.event(self.device_id)

    async def publish_raw(self, payload: bytes, *, topic: str | None = None) -> None:
        """Publish bytes without waiting for an ack (bad-input tests)."""
        async with asyncio.timeout(10):
            await self._connected.wait()
        assert self._client is not None
        await self._client.publish(topic or self.topics.event(self.device_id), payload, qos=1)

    async def next_ack(self, event_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Wait for the ack of an event published with ``publish_raw``."""
        async with asyncio.timeout(timeout):
            while True:
                for ack in self.log.acks:
                    if ack.get("event_id") == event_id:
                        return ack
                await asyncio.sleep(0.02)

    async def wait_command(self, cmd: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout), self.command_received:
            while True:
                for command in self.log.commands:
                    if command["cmd"] == cmd:
                        return command
                await self.command_received.wait()

    async def _heartbeats(self, every_s: float) -> None:
        while True:
            await asyncio.sleep(every_s * random.uniform(0.9, 1.1))
            with contextlib.suppress(TimeoutError):
                await self.send("heartbeat", timeout=every_s)


def summarise(ack: dict[str, Any]) -> str:
    return json.dumps(ack, separators=(",", ":"))
