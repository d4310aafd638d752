"""A test certificate authority and a local TLS server whose every answer a test scripts: slow, stalled,
trickling, oversized or redirecting image servers, reached through the gateway's real fetcher.

The authority is made with `cryptography` (already installed as a dependency of moto), for 127.0.0.1 only;
nothing here is trusted outside the test that builds a context for it.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagegw.request.image_urls import FetchRules

LOOPBACK = "127.0.0.1"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclass
class LocalAuthority:
    """A CA and a server certificate for 127.0.0.1, as PEM files in a temporary directory."""

    directory: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="imagegw-test-ca-")))

    def __post_init__(self) -> None:
        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("imagegw test CA"))
            .issuer_name(_name("imagegw test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = (
            x509.CertificateBuilder()
            .subject_name(_name(LOOPBACK))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        self.ca_pem = self.directory / "ca.pem"
        self.cert_pem = self.directory / "server.pem"
        self.key_pem = self.directory / "server.key"
        self.ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.cert_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
        self.key_pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_pem))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert_pem), str(self.key_pem))
        return context

    def loopback_rules(self) -> FetchRules:
        """The fetcher's rules for tests: the test server's address only, trusting this authority only."""
        return FetchRules(
            address_allowed=lambda address: address == LOOPBACK, tls_context=self.client_context
        )


# A handler gets the accepted TCP socket (no TLS yet) and the server; it does whatever the test scripts.
Handler = Callable[[socket.socket, "ScriptedTlsServer"], None]


class ScriptedTlsServer:
    """Listens on 127.0.0.1; each connection is served by the handler of the request's path (see
    `route`), or by `on_accept` when set (to misbehave before TLS). Stops with the test."""

    def __init__(self, authority: LocalAuthority) -> None:
        self.authority = authority
        self.context = authority.server_context()
        self.routes: dict[str, Callable[[ssl.SSLSocket, ScriptedTlsServer], None]] = {}
        self.on_accept: Handler | None = None
        self.requests: list[str] = []  # the paths asked for, in order
        self.heads: list[bytes] = []  # each request's line and headers, as received
        self._listener = socket.create_server((LOOPBACK, 0))
        self.port = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def url(self, path: str) -> str:
        return f"https://{LOOPBACK}:{self.port}{path}"

    def route(self, path: str, handler: Callable[[ssl.SSLSocket, ScriptedTlsServer], None]) -> str:
        self.routes[path] = handler
        return self.url(path)

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        try:
            if self.on_accept is not None:
                self.on_accept(conn, self)
                return
            conn.settimeout(30)
            tls = self.context.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = tls.recv(4096)
                if not data:
                    return
                head += data
            path = head.split(b" ", 2)[1].decode("latin-1")
            self.requests.append(path)
            self.heads.append(head)
            handler = self.routes.get(path.split("?")[0])
            if handler is None:
                tls.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            else:
                handler(tls, self)
        except (OSError, ssl.SSLError, IndexError):
            pass
        finally:
            conn.close()

    def sleep(self, seconds: float) -> bool:
        """Wait, unless the server stops first; False when it stopped."""
        return not self._stopped.wait(seconds)


# ---------------------------------------------------------------------------------------------- behaviours


def serve(body: bytes, content_type: str = "image/png", *, length: bool = True) -> Callable[..., None]:
    def handler(tls: ssl.SSLSocket, server: ScriptedTlsServer) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nConnection: close\r\n"
        if length:
            head += f"Content-Length: {len(body)}\r\n"
        tls.sendall(head.encode() + b"\r\n")
        view = memoryview(body)
        for start in range(0, len(body), 1024 * 1024):
            tls.sendall(view[start : start + 1024 * 1024])

    return handler


def redirect(location: str, status: int = 302) -> Callable[..., None]:
    def handler(tls: ssl.SSLSocket, server: ScriptedTlsServer) -> None:
        tls.sendall(
            f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )

    return handler


def trickle(
    prefix: bytes, every: float, filler: bytes = b"X-Pad: ", count: int = 10_000
) -> Callable[..., None]:
    """Send `prefix`, then one byte of `filler` (repeated) every `every` seconds, until the client leaves."""

    def handler(tls: ssl.SSLSocket, server: ScriptedTlsServer) -> None:
        tls.sendall(prefix)
        for index in range(count):
            if not server.sleep(every):
                return
            tls.sendall(filler[index % len(filler) : index % len(filler) + 1])

    return handler


def stall_after_accept(seconds: float) -> Handler:
    """Accept the TCP connection and never start TLS (the client waits for the server's hello)."""

    def handler(conn: socket.socket, server: ScriptedTlsServer) -> None:
        server.sleep(seconds)

    return handler


def stall_mid_handshake(seconds: float) -> Handler:
    """Read the client's hello, answer one byte of a TLS record, then nothing."""

    def handler(conn: socket.socket, server: ScriptedTlsServer) -> None:
        conn.recv(4096)
        conn.sendall(b"\x16")
        started = time.monotonic()
        while time.monotonic() - started < seconds and server.sleep(0.5):
            pass

    return handler


def answer_status(status: int) -> Callable[..., None]:
    def handler(tls: ssl.SSLSocket, server: ScriptedTlsServer) -> None:
        tls.sendall(f"HTTP/1.1 {status} Status\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode())

    return handler
