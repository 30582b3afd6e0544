"""A minimal transaction-mode pooler, like Supavisor on port 6543: each transaction may run on another connection.

Speaks the PostgreSQL wire protocol between one client and several server connections (trust
auth only): after every ReadyForQuery that says "idle", the next message goes to the next server
connection, round robin. Session state (SET, session advisory locks, prepared statements) is
therefore left behind on a connection the client will not see again, as with a real pooler.
Test-only; no TLS, no COPY, no cancel.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from usagemeter.ops import embedded

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
SERVER_CONNECTIONS = 3


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data


def _read_message(sock: socket.socket) -> bytes:
    """One typed message: type byte, int32 length (counting itself), body."""
    header = _read_exactly(sock, 5)
    (length,) = struct.unpack("!I", header[1:])
    return header + _read_exactly(sock, length - 4)


def _read_startup(client: socket.socket) -> bytes:
    """The client's startup packet, after declining SSL and GSS encryption."""
    while True:
        (length,) = struct.unpack("!I", _read_exactly(client, 4))
        body = _read_exactly(client, length - 4)
        (code,) = struct.unpack("!I", body[:4])
        if code in (SSL_REQUEST, GSSENC_REQUEST):
            client.sendall(b"N")
            continue
        return struct.pack("!I", length) + body


def _open_server_connection(server_port: int, startup: bytes) -> tuple[socket.socket, list[bytes]]:
    """Log in with the client's startup packet; returns the socket and what the server said up to ReadyForQuery."""
    server = socket.create_connection(("127.0.0.1", server_port))
    server.sendall(startup)
    said: list[bytes] = []
    while True:
        message = _read_message(server)
        if message[:1] == b"E":
            raise ConnectionError(f"server refused the login: {message!r}")
        said.append(message)
        if message[:1] == b"Z":
            return server, said


def _serve_client(client: socket.socket, server_port: int) -> None:
    servers: list[socket.socket] = []
    try:
        startup = _read_startup(client)
        for _ in range(SERVER_CONNECTIONS):
            server, said = _open_server_connection(server_port, startup)
            servers.append(server)
        client.sendall(b"".join(said))  # the last connection's greeting: auth ok, parameters, key, ready
        current = 0
        while True:
            message = _read_message(client)
            if message[:1] == b"X":
                return
            servers[current].sendall(message)
            if message[:1] not in (b"Q", b"S"):
                continue  # extended protocol: answers come after Sync
            while True:
                answer = _read_message(servers[current])
                client.sendall(answer)
                if answer[:1] == b"Z":
                    break
            if answer[5:6] == b"I":  # idle: the transaction is over, the connection goes back to the pool
                current = (current + 1) % len(servers)
    except (ConnectionError, OSError):
        return
    finally:
        for server in servers:
            server.close()
        client.close()


@contextmanager
def transaction_pooler(server_port: int) -> Iterator[int]:
    """Listen on a free port of 127.0.0.1 in front of the server on `server_port`; yields the pooler's port."""
    port = embedded.free_port()
    listener = socket.create_server(("127.0.0.1", port))
    listener.settimeout(0.2)
    stopping = threading.Event()

    def accept() -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            threading.Thread(target=_serve_client, args=(client, server_port), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield port
    finally:
        stopping.set()
        acceptor.join(timeout=5)
        listener.close()
