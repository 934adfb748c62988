"""The centre's calls at Twilio's REST API: place a leg (a call whose TwiML joins a conference), stop one
ringing, hang one up, fetch and delete recordings. Built on :class:`~alarm_centre.escalation.notify.Notifier`
(the same client, base URL, timeouts and retry rules as the escalation's SMS and calls).

Placing a leg retries quick failures (5xx, 429, timeouts) like any call; stopping a leg
(:meth:`Notifier.stop_call`) and deleting a recording try once and leave the retry to the runner's lease.
A 404 for either means it is already gone, which is what was wanted.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Self

import aiohttp

from alarm_centre.escalation.notify import DeliveryFailed, Notifier

TWILIO_API = "https://api.twilio.com"
API_VERSION = "2010-04-01"
#: Twilio call statuses that stop a leg: ``canceled`` for a phone still ringing, ``completed`` to hang up.
STOP_RINGING = "canceled"
HANG_UP = "completed"
AUDIO_TYPE = "audio/mpeg"


class RecordingUnavailable(Exception):
    """Twilio would not hand over a recording's audio (gone, or Twilio unreachable)."""

    def __init__(self, reason: str, *, status: int) -> None:
        super().__init__(reason)
        self.status = status


class Dialler(Notifier):
    """A :class:`Notifier` that also manages conference legs and recordings; an async context manager."""

    _session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        await super().__aenter__()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=30)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().__aexit__(*exc_info)

    async def place_leg(self, *, to: str, from_: str, twiml: str, status_callback: str, timeout: int) -> str:
        """Call ``to`` (a number or ``client:<identity>``) with ``twiml``; returns the call's sid."""
        client = self._require_client()
        params: dict[str, Any] = {
            "to": to,
            "from_": from_,
            "twiml": twiml,
            "timeout": timeout,
            "status_callback": status_callback,
            "status_callback_event": ["answered", "completed"],
            "status_callback_method": "POST",
        }
        sent = await self._deliver("call", to, lambda: client.calls.create_async(**params))
        return sent.sid

    async def delete_recording(self, sid: str) -> None:
        """Delete a recording at Twilio (a 404: it is already gone)."""
        client = self._require_client()
        await self._once(sid, lambda: client.recordings(sid).delete_async())

    def recording_url(self, sid: str) -> str:
        """Where Twilio serves a recording's audio as MP3 (built from the sid, never from a webhook)."""
        base = self._api_base_url or TWILIO_API
        return f"{base}/{API_VERSION}/Accounts/{self._account_sid}/Recordings/{sid}.mp3"

    @asynccontextmanager
    async def recording_audio(self, sid: str) -> AsyncIterator[aiohttp.ClientResponse]:
        """The recording's audio from Twilio, authenticated with the account's credentials."""
        if self._session is None:
            raise RuntimeError("Dialler is not open")
        auth = aiohttp.BasicAuth(self._account_sid, self._auth_token)
        try:
            async with asyncio.timeout(self._request_timeout):
                response = await self._session.get(self.recording_url(sid), auth=auth)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RecordingUnavailable(f"cannot reach Twilio: {exc!r}", status=502) from exc
        try:
            if response.status != 200:
                raise RecordingUnavailable(f"Twilio answered {response.status}", status=response.status)
            yield response
        finally:
            response.release()


__all__ = ["DeliveryFailed", "Dialler", "RecordingUnavailable"]
