"""Request body size limit as plain ASGI middleware: 413 before the body is read.

A declared Content-Length above the limit is refused at once, without reading a byte; a
body sent without one (chunked) is counted as it arrives and refused as soon as it passes
the limit, so no request ever holds more than ``max_body_bytes`` in memory.
"""
import json


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a body passes the limit; turned into a 413 here."""


def too_large_message(limit):
    return (f"request body is larger than the limit of {limit} bytes; send a smaller image "
            "(or start the server with a larger --max-body-bytes)")


class BodySizeLimit:
    def __init__(self, app, max_body_bytes):
        self.app, self.limit = app, int(max_body_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _send_413(send, self.limit)
        received, started = 0, False

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await _send_413(send, self.limit)


async def _send_413(send, limit):
    body = json.dumps({"error": too_large_message(limit), "max_body_bytes": limit}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
