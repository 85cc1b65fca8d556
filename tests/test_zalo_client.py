"""The Zalo Bot API client (``ZaloClient``, on aiohttp): what its callers rely on when Zalo does not answer,
cannot be reached or answers with a redirect. Every failure is a ``ZaloError`` that never quotes the token."""

from __future__ import annotations

import asyncio
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from bot.channels.zalo import ZaloClient, ZaloError
from bot.domain.replies import Outcome, Reply
from bot.emulators.common import free_port

TOKEN = "1234567890:SECRET-zalo-TOKEN"


def failure(make_client, send, error: type[Exception]) -> Exception:
    """The ``error`` that ``send(client)`` raises, the client made and closed in its own event loop."""
    async def go():
        client = make_client()
        try:
            await send(client)
        finally:
            await client.aclose()

    with pytest.raises(error) as failed:
        asyncio.run(go())
    return failed.value


def call(base_url: str, timeout: float = 5.0) -> ZaloError:
    return failure(lambda: ZaloClient(TOKEN, base_url, timeout=timeout),
                   lambda client: client.send_message("u1", "Xin chào"), ZaloError)


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:{port}", "htp://127.0.0.1:{port}", "http://[bad"],
                         ids=["nobody-listens", "a-bad-scheme", "a-bad-address"])
def test_a_zalo_that_cannot_be_reached_is_a_network_error_that_is_retried_and_never_quotes_the_token(base_url):
    error = call(base_url.format(port=free_port()))
    assert error.status is None and error.transient  # the outbox tries again later
    assert "SECRET" not in str(error) and "sendMessage" in str(error)


class HangsUp:
    """A server that reads each request whole and closes the connection without answering (a proxy restarted, a
    connection reset once the request had arrived): the request may have been done."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.requests += 1

    def close(self):
        self.sock.close()


def test_a_send_whose_connection_broke_after_it_left_is_uncertain_on_the_zalo_bot_and_the_oa_never_sent_twice():
    """Sent again, the member would read it twice (and the OA could pay twice): like a send that got no answer in
    time, it is ``maybe_delivered``; a connection refused outright is still tried again (above)."""
    from bot.channels.zalo_oa import OAClient
    from bot.channels.zalo_oa.tokens import OAError

    server = HangsUp()
    try:
        error = call(server.url)
        assert error.status is None and error.maybe_delivered and "SECRET" not in str(error)

        class Tokens:  # the token store's one call the client makes (its own tests cover the real one)
            def current(self, now):
                return "oa-token"

        refused = failure(lambda: OAClient(Tokens(), server.url, server.url),
                          lambda client: client.send_cs("u1", "Xin chào"), OAError)
        assert refused.maybe_delivered and server.requests == 2  # each request arrived whole, once
    finally:
        server.close()


def test_a_message_zalo_took_but_did_not_answer_in_time_is_uncertain_never_sent_again():
    """The request left (the connection was taken) and no answer came: Zalo may have delivered it. The outbox
    records it ``uncertain`` rather than sending it a second time; a refused connection is retried (above)."""
    from bot.channels.zalo import ZaloTransport
    from bot.outbox.sender import SendError

    with socket.socket() as listening:  # accepts connections (the backlog) and never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        url = f"http://127.0.0.1:{listening.getsockname()[1]}"
        error = call(url, timeout=0.5)
        assert error.status is None and error.maybe_delivered and "no answer in time" in str(error)

        async def deliver():
            client = ZaloClient(TOKEN, url, timeout=0.5)
            try:
                await ZaloTransport(client, rate=100).deliver("u1", Reply("Xin chào"), None)
            finally:
                await client.aclose()

        with pytest.raises(SendError) as failed:
            asyncio.run(deliver())
    assert failed.value.kind == "uncertain" and "SECRET" not in failed.value.reason


class _Server:
    """A local HTTP server whose handler answers every POST with ``answer(handler)``; ``hits`` counts them."""

    def __init__(self, answer):
        self.hits = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                outer.hits += 1
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer(self)

            def log_message(self, *args):
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_reply_zalo_took_but_did_not_answer_in_time_is_sent_once_and_counted():
    """A chat reply whose answer came too late: Zalo most likely delivered it. Sent again it would reach the
    member twice (or five times) and cost quota each time; so it is taken as delivered, once."""
    import time

    from bot.channels.zalo.channel import ZaloChannel

    def late(h):
        time.sleep(0.8)  # after the client gave up: the message went, the answer is lost
        body = b'{"ok":true,"result":{"message_id":"m1","date":1764547200000}}'
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    class Quota:
        added = 0

        def add(self, n, now):
            Quota.added += n

    zalo = _Server(late)
    try:
        async def reply() -> int:
            client = ZaloClient(TOKEN, zalo.url, timeout=0.3)
            try:
                return await ZaloChannel(None, client, quota=Quota()).send_outcome("u1", Outcome([Reply("Câu 1/10")]))
            finally:
                await client.aclose()

        sent = asyncio.run(reply())
        time.sleep(2.0)  # a second try would have reached the server by now
    finally:
        zalo.close()
    assert zalo.hits == 1 and sent == 1 and Quota.added == 1


def test_a_redirect_is_not_followed_so_the_token_never_reaches_another_host():
    elsewhere = _Server(lambda h: (h.send_response(200), h.end_headers(), h.wfile.write(b'{"ok":true,"result":{}}')))

    def redirect(h):
        h.send_response(307)
        h.send_header("Location", f"{elsewhere.url}/bot{TOKEN}/sendMessage")
        h.send_header("Content-Length", "0")
        h.end_headers()

    zalo = _Server(redirect)
    try:
        error = call(zalo.url)
    finally:
        zalo.close()
        elsewhere.close()
    assert zalo.hits == 1 and elsewhere.hits == 0
    assert error.status == 307 and "SECRET" not in str(error)


def test_a_refusal_carries_zalos_error_code_and_description():
    def refuse(h):
        body = b'{"ok":false,"error_code":429,"description":"Quota exceeded"}'
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    zalo = _Server(refuse)
    try:
        error = call(zalo.url)
    finally:
        zalo.close()
    assert error.status == 429 and error.description == "Quota exceeded" and error.transient
