"""Access tokens for operators whose console rings in the browser (Twilio's Voice SDK).

A token is a JWT signed with one of the account's API keys, naming the operator's client identity
(:func:`~alarm_centre.telephony.settings.client_identity`) and a Voice grant that lets it receive calls
(the bridge rings ``client:<identity>`` when it offers a call) and, when a TwiML app is configured, make
them. It lasts ``token_ttl_s``; the console asks for a new one before it runs out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from twilio.jwt.access_token import AccessToken
from twilio.jwt.access_token.grants import VoiceGrant

from alarm_centre.telephony.settings import client_identity


@dataclass(frozen=True, slots=True)
class TokenIssuer:
    account_sid: str
    api_key_sid: str
    api_key_secret: str
    twiml_app_sid: str = ""
    ttl_s: int = 3600

    def issue(self, user: str, *, now: float | None = None) -> dict[str, object]:
        """A token for ``user``'s browser: ``{"token", "identity", "expires_in_s"}``."""
        identity = client_identity(user)
        grant = VoiceGrant(incoming_allow=True, outgoing_application_sid=self.twiml_app_sid or None)
        token = AccessToken(
            self.account_sid,
            self.api_key_sid,
            self.api_key_secret,
            identity=identity,
            ttl=self.ttl_s,
            nbf=int(time.time() if now is None else now),
            grants=[grant],
        )
        return {"token": token.to_jwt(), "identity": identity, "expires_in_s": self.ttl_s}
