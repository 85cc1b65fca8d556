"""Machinery the Telegram and Zalo emulators share: the in-process HTTP server, the driver's
mark/wait_for handshake and fault-injection bookkeeping. The Bot API semantics stay in each
emulator's own module."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response


def u16len(text: str) -> int:
    """Length in UTF-16 code units: how Telegram counts characters and offsets, and the
    stricter reading of Zalo's limits (never below Python ``len``)."""
    return len(text.encode("utf-16-le")) // 2


def api_response(payload: Any, status: int) -> Response:
    """An API answer as JSON; a lone surrogate a user typed (which UTF-8 cannot carry) goes as JSON's "\\ud800"
    escape, as the real servers send it."""
    try:
        return JSONResponse(payload, status_code=status)
    except UnicodeEncodeError:
        return Response(json.dumps(payload).encode(), status_code=status, media_type="application/json")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now: for the webhook server an emulator calls. Taken below the
    kernel's range for outgoing connections where possible: a port the kernel hands out (bind to 0) may be taken
    by any client's connection (a database's, an HTTP client's) before the server binds it."""
    low = _ephemeral_low()
    for _ in range(50):
        port = random.randrange(10_000, low) if low > 11_000 else 0
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def wait_until(cond: threading.Condition, done: Callable[[], bool], timeout: float,
               failure: Callable[[], str]) -> None:
    """Wait on cond, which the caller holds, until done(); else raise TimeoutError(failure()).
    One deadline across wake-ups, as notify_all wakes every waiter on any change."""
    deadline = time.monotonic() + timeout
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(failure())
        cond.wait(remaining)


class BackgroundServer:
    """Serves a Starlette app with uvicorn in a daemon thread with its own event loop, so
    synchronous tests and the playground can run a real HTTP server in-process.
    Subclasses build the app in _app() and name the thread and error message."""

    thread_name = "emulator"
    description = "Emulator"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def _app(self) -> Starlette:
        raise NotImplementedError

    def start(self) -> None:
        """Bind first (port 0 picks a free port, known before start returns), then serve."""
        # An explicit IPPROTO_TCP lets asyncio set TCP_NODELAY on accepted connections;
        # without it every response waits ~40 ms for Nagle + delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self._app(), log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)  # no signal handlers off the main thread
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]},
                                        name=f"{self.thread_name}:{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.description} HTTP server failed to start")
            time.sleep(0.005)

    def stop(self) -> None:
        if self._server and self._thread:
            self._server.should_exit = True
            self._thread.join(timeout=5)
            self._server = self._thread = None


@dataclass
class Fault:
    """An injected error: the next `times` calls of method ("*" = any), in chat_id only
    unless it is None, fail with status and description, once `after` such calls went through
    (the second part of a long message, say)."""

    method: str
    status: int
    description: str
    times: int
    chat_id: Any
    after: int = 0


FaultT = TypeVar("FaultT", bound=Fault)


def take_fault(faults: list[FaultT], method: str, chat_id: Any) -> FaultT | None:
    """Use up one shot of the first fault matching this call; None: the call goes ahead.
    The caller holds the state lock and raises its own API's error."""
    for fault in faults:
        if fault.method in (method, "*") and fault.chat_id in (None, chat_id):
            if fault.after > 0:
                fault.after -= 1
                return None
            fault.times -= 1
            if fault.times <= 0:
                faults.remove(fault)
            return fault
    return None


class DriverState(Protocol):
    """What ChatDriver needs of an emulator's state."""

    cond: threading.Condition
    chats: dict[Any, Any]  # chat id -> chat with a .seq


StateT = TypeVar("StateT", bound=DriverState)


class ChatDriver(Generic[StateT]):
    """Base of the drivers that play people in one chat: mark() "now", act, then wait_for()
    the bot. The emulator bumps the chat's .seq (and notifies cond) on every bot action a
    driver may wait for; subclasses say what the chat shows (messages, transcript)."""

    _awaited = "bot action"  # what wait_for's timeout message says was missing

    def __init__(self, state: StateT, chat_id: Any) -> None:
        self._state, self._chat_id = state, chat_id
        self._mark = 0

    @property
    def _chat(self) -> Any:
        return self._state.chats[self._chat_id]

    @property
    def messages(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def transcript(self) -> str:
        raise NotImplementedError

    def mark(self) -> None:
        """Remember "now": wait_for only counts bot actions after this point."""
        with self._state.cond:
            self._mark = self._chat.seq

    def recent(self, n: int) -> list[dict[str, Any]]:
        """The newest ``n`` bot messages, oldest first: what a wait_for predicate should look at,
        as it runs on every change in any chat."""
        return self.messages[-n:]

    def last(self) -> dict[str, Any] | None:
        """The newest bot message, or None."""
        messages = self.recent(1)
        return messages[-1] if messages else None

    def wait_for(self, predicate: Callable[[Self], bool] | None = None,
                 timeout: float = 5.0) -> dict[str, Any] | None:
        """Block until the bot acted in this chat since the mark and predicate(self) holds.
        The predicate runs under the emulator lock: keep it quick. Returns the newest bot
        message; the mark is not moved."""
        with self._state.cond:
            wait_until(
                self._state.cond,
                lambda: self._chat.seq > self._mark and (predicate is None or predicate(self)),
                timeout,
                lambda: (f"no matching {self._awaited} in chat {self._chat_id} within "
                         f"{timeout}s. Transcript:\n{self.transcript()}"))
            return self.last()
