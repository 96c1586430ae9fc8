"""The Python ``signalrcore`` client against two switchboard chat servers on one Redis.

``signalrcore`` (https://github.com/mandrewcito/signalrcore) is a SignalR
client written independently of Microsoft's. For the json and the
messagepack protocol, over WebSockets, a client on each of two chat servers
checks a broadcast that crosses the servers, an invocation with a result,
and a server-to-client invocation sent across the servers (signalrcore
cannot answer one with a result, so only its arrival and the caller's clean
failure are checked).

Run it with ``cargo xtask test``, which creates a virtualenv from
``requirements.txt`` and sets the environment; by hand::

    SWITCHBOARD_CHAT_BIN=target/debug/examples/chat \\
    SWITCHBOARD_REDIS_URL=redis://127.0.0.1:PORT \\
    python -m unittest discover -s tests/interop/python -v

The servers are started here as tests/interop/lib/harness.mjs starts them:
``$SWITCHBOARD_CHAT_BIN --port 0 --redis $SWITCHBOARD_REDIS_URL``, each
ready once it prints ``switchboard chat listening on http://127.0.0.1:PORT``,
and killed at the end whatever happened. Every wait is for a condition, with
a deadline generous enough for a loaded machine.
"""

import atexit
import ctypes
import faulthandler
import itertools
import logging
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse
import uuid

from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.types import HttpTransportType, HubProtocolEncoding

#: How long any one thing (a server start, a connection, a message) may take.
TIMEOUT = 15.0

#: How long an unanswered ``AskClient`` may take: the chat example waits 10 s
#: for the client's answer (``ASK_TIMEOUT`` in its main.rs), then this margin.
ASK_TIMEOUT = 10.0 + TIMEOUT

#: How long the whole run may take before it is ended with every thread's
#: traceback (a hang in a client library should fail the run, not stall it).
RUN_TIMEOUT = 300.0

#: The line a chat server prints once it listens.
LISTENING = re.compile(r"switchboard chat listening on (http://\S+)")


def required(name):
    """The value of the environment variable ``name``; fails if it is unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise RuntimeError(f"{name} is not set: run these tests with `cargo xtask test`")
    return value


#: ``prctl``, looked up here rather than in the child (see ``die_with_parent``).
PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


def die_with_parent():
    """Runs in a chat server's process between fork and exec: have it killed
    when this process dies, even by SIGKILL, so that no server outlives the
    test (Linux only)."""
    if PRCTL is not None:
        PRCTL(1, 9)  # PR_SET_PDEATHSIG, SIGKILL


class ChatServer:
    """A chat server process on the shared Redis."""

    def __init__(self):
        """Starts the process; ``wait_until_listening`` then waits for it."""
        binary = required("SWITCHBOARD_CHAT_BIN")
        redis = required("SWITCHBOARD_REDIS_URL")
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "warn")
        # stderr is inherited, so the servers' logs show up in the test output.
        self.process = subprocess.Popen(
            [binary, "--port", "0", "--redis", redis],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            preexec_fn=die_with_parent,
        )
        self.url = None
        self.reader = None

    def wait_until_listening(self):
        """Waits for the line that gives the server's URL."""
        lines = queue.Queue()
        # Keeps reading stdout after the banner, so the pipe never fills up.
        self.reader = threading.Thread(target=self._read, args=(lines,), daemon=True)
        self.reader.start()
        deadline = time.monotonic() + TIMEOUT
        while self.url is None:
            left = deadline - time.monotonic()
            try:
                line = lines.get(timeout=max(left, 0))
            except queue.Empty:
                raise RuntimeError(f"chat server did not start within {TIMEOUT} s") from None
            if line is None:
                code = self.process.wait()
                raise RuntimeError(f"chat server exited with status {code} before listening")
            match = LISTENING.search(line)
            if match:
                self.url = match.group(1)

    def _read(self, lines):
        """Hands each stdout line to ``lines``, then None at end of file."""
        for line in self.process.stdout:
            lines.put(line)
        lines.put(None)

    def stop(self):
        """Kills the process and waits for it to end."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.reader is not None:
            self.reader.join(TIMEOUT)
        self.process.stdout.close()


class SignalRCoreLog(logging.Handler):
    """Keeps what signalrcore logs at WARNING or above (it reports some
    failures, such as a refused handshake or an undecodable message, only
    there), and prints it."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []
        # Not `self.lock`: that is logging.Handler's own lock, held around `emit`.
        self.records_lock = threading.Lock()

    def emit(self, record):
        with self.records_lock:
            self.records.append(record)
        print(f"signalrcore {record.levelname}: {record.getMessage()}", file=sys.stderr)

    def errors(self):
        """The ERROR records so far, as text."""
        with self.records_lock:
            return [r.getMessage() for r in self.records if r.levelno >= logging.ERROR]


LOG = SignalRCoreLog()

#: Makes user names and message texts unique within the run.
COUNTER = itertools.count(1)


def unique(prefix):
    """A text no other test uses."""
    return f"{prefix}-{os.getpid()}-{next(COUNTER)}-{uuid.uuid4().hex[:6]}"


class Client:
    """A chat client that records every ``message(from, text)``, every
    ``ask(question)`` and every completion it receives.

    ``protocol`` is a ``HubProtocolEncoding`` (signalrcore then builds the
    protocol from the negotiate response) or a protocol instance.
    """

    def __init__(self, server, user, protocol):
        """Builds the connection; ``start`` opens it."""
        self.user = user
        self.changed = threading.Condition()
        self.opened = False
        self.closed = False
        self.messages = []
        self.questions = []
        self.completions = {}
        query = urllib.parse.urlencode({"user": user})
        self.connection = (
            HubConnectionBuilder()
            .with_url(
                f"{server.url}/hubs/chat?{query}",
                options={"transport": HttpTransportType.web_sockets},
            )
            .with_hub_protocol(protocol)
            .build()
        )
        self.connection.on_open(lambda: self._record("opened", True))
        self.connection.on_close(lambda: self._record("closed", True))
        # Completions with an error go here rather than to the invocation's callback.
        self.connection.on_error(self._complete)
        self.connection.on("message", lambda args: self._append(self.messages, tuple(args)))
        # signalrcore ignores what a handler returns and never answers an
        # invocation that expects a result (see the AskClient test).
        self.connection.on("ask", lambda args: self._append(self.questions, args[0]))
        self.id = None

    def start(self):
        """Negotiates, opens the WebSocket, waits for the handshake, then asks
        the server for this connection's id."""
        self.connection.start()
        self.wait_for(lambda: self.opened, "the handshake to complete")
        self.id = self.result(self.invoke("WhoAmI"))["connectionId"]

    def _record(self, name, value):
        with self.changed:
            setattr(self, name, value)
            self.changed.notify_all()

    def _append(self, items, item):
        with self.changed:
            items.append(item)
            self.changed.notify_all()

    def _complete(self, message):
        with self.changed:
            self.completions[getattr(message, "invocation_id", None)] = message
            self.changed.notify_all()

    def wait_for(self, condition, what, timeout=TIMEOUT):
        """Waits until ``condition()`` holds (checked under the lock); fails
        after ``timeout`` seconds, saying ``what`` it waited for."""
        with self.changed:
            if self.changed.wait_for(condition, timeout):
                return
            state = (
                f"opened={self.opened} closed={self.closed} messages={self.messages} "
                f"questions={self.questions} signalrcore errors={LOG.errors()}"
            )
        raise AssertionError(f"{self.user} waited {timeout} s for {what}; {state}")

    def invoke(self, method, *args):
        """Invokes a hub method; returns the invocation id."""
        invocation = self.connection.invoke(method, list(args), on_invocation=self._complete)
        return invocation.invocation_id

    def completion(self, invocation_id, timeout=TIMEOUT):
        """Waits for the completion of an invocation and returns it."""
        self.wait_for(
            lambda: invocation_id in self.completions,
            f"the completion of invocation {invocation_id}",
            timeout,
        )
        with self.changed:
            return self.completions[invocation_id]

    def result(self, invocation_id, timeout=TIMEOUT):
        """Waits for the completion of an invocation; returns its result, or
        fails if it completed with an error."""
        completion = self.completion(invocation_id, timeout)
        if completion.error:
            raise AssertionError(f"invocation {invocation_id} failed: {completion.error}")
        return completion.result

    def receive(self, text):
        """Waits for a ``message`` whose text is ``text``; returns (from, text)."""
        found = []

        def arrived():
            found[:] = [m for m in self.messages if m[1] == text]
            return bool(found)

        self.wait_for(arrived, f"message {text!r}")
        return found[0]

    def stop(self):
        """Closes the connection.

        signalrcore's own ``stop()`` closes the socket while its receiving
        thread is blocked reading it, then joins that thread; on Linux the
        read is not woken by the close, so ``stop()`` hangs (and the server
        sees no close) until the server next sends something, its 15 s
        keep-alive Ping. Shutting the socket down first wakes the read: the
        receiving thread sees the end of the stream and reports the close.
        """
        sock = getattr(getattr(self.connection.transport, "_client", None), "sock", None)
        if sock is None:
            return
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # Already closed, by the server or by signalrcore.
        if self.opened:
            self.wait_for(lambda: self.closed, "the connection to close")
        self.connection.stop()
        sock.close()


SERVERS = []


def setUpModule():
    faulthandler.dump_traceback_later(RUN_TIMEOUT, exit=True)
    logger = logging.getLogger("SignalRCoreClient")
    logger.setLevel(logging.WARNING)
    logger.addHandler(LOG)
    logger.propagate = False
    # Registered first, so the servers are killed even if a start fails.
    unittest.addModuleCleanup(stop_servers)
    atexit.register(stop_servers)
    # Both start before this process has a second thread: `die_with_parent`
    # runs between fork and exec, which is only safe in a single thread.
    SERVERS.append(ChatServer())
    SERVERS.append(ChatServer())
    for server in SERVERS:
        server.wait_until_listening()


def stop_servers():
    """Kills every chat server started here."""
    while SERVERS:
        SERVERS.pop().stop()


def tearDownModule():
    faulthandler.cancel_dump_traceback_later()


class ChatTests:
    """The checks, for one protocol (``ENCODING``, and ``PROTOCOL``, the class
    of the same protocol that signalrcore builds for ``ENCODING``)."""

    ENCODING = None
    PROTOCOL = None

    def setUp(self):
        self.errors_before = len(LOG.errors())
        self.clients = []

    def tearDown(self):
        # Checked before the clients close: signalrcore sends no close frame,
        # so a frame the server sends meanwhile (a keep-alive Ping) can reset
        # the connection, which it logs as an error, harmlessly.
        errors = LOG.errors()[self.errors_before:]
        for client in self.clients:
            client.stop()
        self.assertEqual(errors, [], "signalrcore logged errors")

    def connect(self, server, user=None, protocol=None):
        """A client of ``server``, closed after the test."""
        client = Client(server, user or unique("py"), protocol or self.ENCODING)
        self.clients.append(client)
        client.start()
        return client

    def test_handshake_asks_for_the_negotiated_version(self):
        # signalrcore uses the negotiate response's `negotiateVersion` as the
        # hub protocol version, and does not ask for negotiate version 1: so
        # it sends version 0, which the server must accept like ASP.NET Core.
        client = self.connect(SERVERS[0])
        self.assertIsInstance(client.connection.protocol, self.PROTOCOL)
        self.assertEqual(client.connection.protocol.version, 0)

    def test_handshake_with_version_1(self):
        # A protocol object built by hand has version 1, the current one.
        client = self.connect(SERVERS[1], protocol=self.PROTOCOL())
        self.assertEqual(client.connection.protocol.version, 1)
        self.assertTrue(client.id)

    def test_broadcast_reaches_both_servers(self):
        a = self.connect(SERVERS[0])
        b = self.connect(SERVERS[1])
        text = unique("hello")
        # A Broadcast completes once the server has sent it.
        self.assertIsNone(a.result(a.invoke("Broadcast", text)))
        self.assertEqual(b.receive(text), (a.user, text))
        self.assertEqual(a.receive(text), (a.user, text))
        text = unique("back")
        self.assertIsNone(b.result(b.invoke("Broadcast", text)))
        self.assertEqual(a.receive(text), (b.user, text))
        self.assertEqual(b.receive(text), (b.user, text))

    def test_who_am_i_returns_the_connection_and_user(self):
        a = self.connect(SERVERS[0])
        b = self.connect(SERVERS[1])
        me = a.result(a.invoke("WhoAmI"))
        self.assertEqual(set(me), {"connectionId", "user"})
        self.assertIsInstance(me["connectionId"], str)
        self.assertTrue(me["connectionId"])
        self.assertEqual(me["user"], a.user)
        self.assertNotEqual(me["connectionId"], b.id)

    def test_ask_client_reaches_the_other_server(self):
        # signalrcore 1.0.2 cannot answer a server-to-client invocation: its
        # handlers' return values are dropped and no Completion is ever sent
        # (BaseHubConnection.__on_invocation_message). So this checks what can
        # be checked: the `ask` invocation crosses to B's server and reaches B,
        # and A's AskClient then fails cleanly once the server gives up waiting,
        # with both connections still working.
        a = self.connect(SERVERS[0])
        b = self.connect(SERVERS[1])
        question = unique("q")
        ask = a.invoke("AskClient", b.id, question)
        b.wait_for(lambda: question in b.questions, f"ask({question!r})")
        completion = a.completion(ask, ASK_TIMEOUT)
        self.assertIsNone(completion.result)
        self.assertTrue(completion.error, "an unanswered AskClient should fail")
        text = unique("after")
        self.assertIsNone(a.result(a.invoke("Broadcast", text)))
        b.receive(text)
        a.receive(text)


class JsonTests(ChatTests, unittest.TestCase):
    """The json protocol, text WebSocket messages."""

    ENCODING = HubProtocolEncoding.text
    PROTOCOL = JsonHubProtocol


class MessagePackTests(ChatTests, unittest.TestCase):
    """The messagepack protocol, binary WebSocket messages."""

    ENCODING = HubProtocolEncoding.binary
    PROTOCOL = MessagePackHubProtocol


if __name__ == "__main__":
    unittest.main()
