"""Error answers for the HTTP layer: strict JSON bodies, the middleware that turns every failure into
``{"error": str, "detail": ...}`` with the right status (never a stack trace), and the body deadline."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from alarm_centre.alerts.lifecycle import IllegalTransition
from alarm_centre.store.tx import Conflict, InvalidRequest, NotFound
from devices import strict_json

log = logging.getLogger(__name__)

ON_ERROR: web.AppKey[Callable[[int], None]] = web.AppKey("on_error")


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """A JSON answer, always strict RFC 8259 JSON: a non-finite number is written as ``null``, never as
    ``NaN``, so one bad value can never make a whole answer unreadable to a browser."""
    return web.json_response(body, status=status, headers=headers, dumps=strict_json.safe_dumps)


def json_error(status: int, error: str, detail: Any = None) -> web.Response:
    return json_response({"error": error, "detail": detail}, status=status)


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every failure into a JSON error with the right status."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.content_type == "application/json" and exc.text:
            response = web.Response(status=exc.status, text=exc.text, content_type="application/json")
        else:
            reason = {404: "not found", 405: "method not allowed", 413: "request body too large"}.get(
                exc.status, exc.reason.lower()
            )
            detail: dict[str, Any] = {"path": request.path}
            if isinstance(exc, web.HTTPMethodNotAllowed):
                detail["allowed"] = sorted(exc.allowed_methods)
            response = json_error(exc.status, reason, detail)
        if "Allow" in exc.headers:  # a 405 names the methods the path does serve (RFC 9110 15.5.6)
            response.headers["Allow"] = exc.headers["Allow"]
    except NotFound as exc:
        response = json_error(404, "not found", str(exc))
    except Conflict as exc:
        response = json_error(409, "conflict", {"message": str(exc), "holder": exc.holder})
    except IllegalTransition as exc:
        response = json_error(409, "illegal transition", {"message": str(exc), "state": exc.state.value})
    except InvalidRequest as exc:
        response = json_error(422, "invalid request", str(exc))
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client hung up while we answered: normal for streams and impatient clients, not a fault
        # of ours, so no ERROR and no 500 in the metrics. The response can no longer be delivered.
        log.debug("client hung up during %s %s", request.method, request.path)
        return web.Response(status=499)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = json_error(500, "internal error", "the bridge logged the details")
    if response.status >= 400:
        on_error = request.app.get(ON_ERROR)
        if on_error is not None:
            on_error(response.status)
    return response


#: Set by make_app: seconds a request's body has to arrive in full (``http.body_timeout_s``).
BODY_TIMEOUT: web.AppKey[float] = web.AppKey("body_timeout", float)


class SlowBody(Exception):
    """A request's body did not arrive within ``http.body_timeout_s``."""


@web.middleware
async def body_in_time(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A request's body must arrive within ``http.body_timeout_s``: a client that trickles it is answered
    408 and its connection closed, so it cannot hold a connection (and a handler) open for long.

    The handler reads the body as usual; when the time is up and the body is still arriving, its read
    fails with :class:`SlowBody`, and whatever the handler made of that, the answer is the 408.
    """
    if not request.body_exists:
        return await handler(request)
    limit = request.app[BODY_TIMEOUT]
    too_slow: list[bool] = []

    def cut_off() -> None:
        if not request.content.is_eof():
            too_slow.append(True)
            request.content.set_exception(SlowBody())

    timer = asyncio.get_running_loop().call_later(limit, cut_off)
    try:
        response = await handler(request)
    except SlowBody:
        response = None
    except Exception:
        if not too_slow:
            raise
        response = None
    finally:
        timer.cancel()
    if not too_slow and response is not None:
        return response
    log.info("closed a connection whose request body was slow: %s %s", request.method, request.path)
    if response is None or not response.prepared:
        response = json_error(408, "request timeout", f"the body did not arrive within {limit:g} s")
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
    request.protocol.force_close()  # and no lingering read of the rest of the body
    return response


async def json_safety_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: no MIME sniffing. JSON answers (alerts, residents, tokens): never cached."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if response.content_type == "application/json":
        response.headers.setdefault("Cache-Control", "no-store")


def json_exception(kind: type[web.HTTPException], error: str, detail: Any) -> web.HTTPException:
    """An aiohttp HTTP exception whose body is the JSON error ``{"error": error, "detail": detail}``."""
    return kind(text=json.dumps({"error": error, "detail": detail}), content_type="application/json")
