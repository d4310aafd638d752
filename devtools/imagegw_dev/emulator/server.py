"""The emulator's HTTP server: request dispatch, the control routes, the `Emulator` itself and its CLI."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import re
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

from imagegw_dev.emulator import bedrock_wire, openai_wire
from imagegw_dev.emulator.errors import ApiError
from imagegw_dev.emulator.faults import Fault, FaultPlan

MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_STORED_FILES = 512
DEFAULT_CLI_PORT = 8089
_OPENAI_ROUTE = re.compile(r"/v1/images/(generations|edits|variations)")
_AZURE_ROUTE = re.compile(r"/openai/deployments/([^/]+)/images/(generations|edits)")
_BEDROCK_ROUTE = re.compile(r"/model/([^/]+)/invoke")
_FILE_ROUTE = re.compile(r"/files/([A-Za-z0-9_-]+)\.(png|jpeg|webp|gif|svg)")


@dataclass
class RecordedRequest:
    """One image request as the emulator received it."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    form: dict[str, str] = field(default_factory=dict)
    files: list[tuple[str, str | None, str | None, int]] = field(default_factory=list)
    deployment: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = [list(f) for f in self.files]
        return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):  # client went away, socket closed by stop()
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle holds the body back until
    # the client's delayed ACK (~40 ms on every kept-alive request).
    disable_nagle_algorithm = True
    server_version = "imagegw-emulator/1"
    sys_version = ""
    timeout = 60
    server: _Server

    request_id = ""
    _headers_sent = False

    # ----- plumbing -------------------------------------------------------------------------------

    @property
    def emulator(self) -> Emulator:
        return self.server.emulator

    def version_string(self) -> str:
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        if self.emulator.log_requests:
            sys.stderr.write(f"emulator: {self.address_string()} {format % args}\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.emulator.log_requests:
            sys.stderr.write(f'emulator: {self.address_string()} "{self.requestline}" {code}\n')

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed request lines, unsupported methods...: answer in OpenAI format, not HTML.
        self.request_id = self.request_id or "req_" + secrets.token_hex(16)
        self.close_connection = True
        self._send_json(code, ApiError(code, message or explain or "Bad request.").body())

    def _begin(self, status: int, content_type: str, headers: Mapping[str, str] | None = None) -> None:
        self._headers_sent = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("x-request-id", self.request_id)
        for key, value in (headers or {}).items():
            self.send_header(key, value)

    def _send_bytes(
        self, status: int, payload: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self._begin(status, content_type, headers)
        self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _send_json(self, status: int, obj: Any, headers: Mapping[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(obj).encode("utf-8"), "application/json", headers)

    def _send_error(self, error: ApiError) -> None:
        self._send_json(error.status, error.body(), error.headers)

    def _drop(self) -> None:
        self.close_connection = True
        if self.emulator.log_requests:
            sys.stderr.write(f'emulator: {self.address_string()} "{self.requestline}" dropped\n')
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                except ValueError:
                    self.close_connection = True
                    raise ApiError(400, "Invalid chunked request body.") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    self.close_connection = True
                    raise ApiError(413, "Request body too large.", code="request_too_large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
        length_header = self.headers.get("Content-Length")
        if not length_header:
            return b""
        try:
            length = int(length_header)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "Invalid Content-Length header.") from None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(
                413,
                f"Request body too large: {length} bytes (the emulator takes up to {MAX_BODY_BYTES}).",
                code="request_too_large",
            )
        return self.rfile.read(length) if length > 0 else b""

    # ----- dispatch -------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    def do_PATCH(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        self.request_id = "req_" + secrets.token_hex(16)
        self._headers_sent = False
        try:
            self._route()
        except ApiError as exc:
            if not self._headers_sent:
                self._send_error(exc)
            else:
                self.close_connection = True
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            if not self._headers_sent:
                self._send_error(
                    ApiError(
                        500, f"Emulator internal error: {type(exc).__name__}: {exc}", type="server_error"
                    )
                )

    def _route(self) -> None:
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        method = self.command
        if method in ("GET", "HEAD") and (match := _FILE_ROUTE.fullmatch(path)):
            self._serve_file(match.group(1), match.group(2))
            return
        if path.startswith("/_emulator/"):
            self._control(method, path)
            return
        if method == "POST":
            if match := _OPENAI_ROUTE.fullmatch(path):
                self._image_request(match.group(1), None, path, query)
                return
            if match := _AZURE_ROUTE.fullmatch(path):
                self._image_request(match.group(2), match.group(1), path, query)
                return
            if match := _BEDROCK_ROUTE.fullmatch(path):
                self._bedrock_request(unquote_to_bytes(match.group(1)).decode("utf-8", "replace"), path)
                return
        if method in ("POST", "PUT", "PATCH"):
            self._read_body()
        raise ApiError(404, f"Invalid URL ({method} {path})")

    def _serve_file(self, file_id: str, ext: str) -> None:
        stored = self.emulator._get_file(file_id)
        if stored is None or stored[1] != openai_wire.CONTENT_TYPES[ext]:
            raise ApiError(404, f"No such file: {file_id}.{ext}", code="not_found")
        self._send_bytes(200, stored[0], stored[1], {"Cache-Control": "private, max-age=3600"})

    def _control(self, method: str, path: str) -> None:
        emu = self.emulator
        raw = self._read_body() if method in ("POST", "PUT", "PATCH") else b""
        if path == "/_emulator/health" and method == "GET":
            self._send_json(200, {"ok": True})
        elif path == "/_emulator/requests" and method == "GET":
            self._send_json(200, {"requests": [r.to_dict() for r in emu._snapshot()]})
        elif path == "/_emulator/reset" and method == "POST":
            emu.reset()
            self._send_json(200, {"ok": True})
        elif path == "/_emulator/faults" and method == "GET":
            self._send_json(200, emu._fault_state())
        elif path == "/_emulator/faults" and method == "POST":
            try:
                payload = json.loads(raw or b"{}")
                if not isinstance(payload, dict) or not set(payload) <= {"faults", "mode"}:
                    raise ValueError('expected {"faults": [...]} and/or {"mode": {...}|null}')
                faults = payload.get("faults", [])
                if not isinstance(faults, list):
                    raise ValueError("'faults' must be an array")
                queued = [Fault.coerce(f) for f in faults]
                mode = Fault.coerce(payload["mode"]) if payload.get("mode") is not None else None
            except ValueError as exc:  # JSONDecodeError is a ValueError
                raise ApiError(
                    400, f"Invalid fault request: {exc}", param="faults", code="invalid_value"
                ) from None
            emu.add_faults(*queued)
            if "mode" in payload:
                emu.set_fault_mode(mode)
            self._send_json(200, emu._fault_state())
        else:
            raise ApiError(404, f"Invalid URL ({method} {path})")

    # ----- image requests -------------------------------------------------------------------------

    def _headers_dict(self) -> dict[str, str]:
        """The request headers, names lower-cased, repeated headers joined with ', '."""
        headers: dict[str, str] = {}
        for key, value in self.headers.items():
            key = key.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        return headers

    def _apply_fault(self, fault: Fault | None, as_error: Callable[[Fault, int], ApiError]) -> bool:
        """Apply a fault's delay, then its drop or its error status; True when the connection was dropped."""
        if fault is None:
            return False
        if fault.delay > 0:
            self.emulator._stopping.wait(fault.delay)
        if fault.drop:
            self._drop()
            return True
        if fault.status is not None and fault.status != 200:
            raise as_error(fault, fault.status)
        return False

    def _image_request(self, kind: str, deployment: str | None, path: str, query: dict[str, str]) -> None:
        emu = self.emulator
        headers = self._headers_dict()
        record = RecordedRequest("POST", path, query, headers, deployment=deployment)
        try:
            raw = self._read_body()
        except ApiError:
            emu._record(record)
            raise
        body = openai_wire.parse_body(kind, raw, headers.get("content-type", ""))
        record.json, record.form = body.json, dict(body.form)
        record.files = [(u.field, u.filename, u.content_type, len(u.data)) for u in body.uploads]
        emu._record(record)

        openai_wire.check_credentials(headers, query, deployment, emu.api_key)
        if body.error is not None:
            raise body.error
        model = openai_wire.model_name(body.params, deployment)
        prompt, directive = openai_wire.read_prompt(kind, body.params)
        fault = emu._next_fault(directive)
        if self._apply_fault(fault, lambda f, status: openai_wire.fault_error(f, status, model)):
            return
        job = openai_wire.build_job(kind, model, prompt, body, deployment=deployment is not None)
        if job.stream:
            self._stream(job, fault)
        else:
            self._respond(job, fault)

    def _respond(self, job: openai_wire.Job, fault: Fault | None) -> None:
        host = self.headers.get("Host")
        base_url = f"http://{host}" if host else self.emulator.base_url
        payload = openai_wire.image_answer(job, fault, self.emulator._store_file, base_url)
        self._send_bytes(200, payload, "application/json")

    def _stream(self, job: openai_wire.Job, fault: Fault | None) -> None:
        self.close_connection = True
        self._begin(200, "text/event-stream", {"Cache-Control": "no-cache", "Connection": "close"})
        self.end_headers()
        for name, data in openai_wire.stream_events(job, fault):
            self.wfile.write(f"event: {name}\ndata: {data}\n\n".encode())
            self.wfile.flush()

    # ----- Amazon Bedrock (Nova Canvas, Stability AI) ------------------------------------------------

    def _send_bedrock_error(self, status: int, message: str | None = None) -> None:
        body, code = bedrock_wire.error_answer(status, message)
        self._send_json(status, body, {"x-amzn-ErrorType": code, "x-amzn-RequestId": self.request_id})

    def _bedrock_request(self, model_id: str, path: str) -> None:
        emu = self.emulator
        record = RecordedRequest("POST", path, {}, self._headers_dict(), deployment=model_id)
        try:
            raw = self._read_body()
        except ApiError as exc:
            emu._record(record)
            self._send_bedrock_error(exc.status, exc.message)
            return
        try:
            doc = json.loads(raw.decode("utf-8")) if raw.strip() else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            doc = None
        record.json = doc if isinstance(doc, dict) else None
        emu._record(record)
        try:
            if not isinstance(doc, dict):
                raise ApiError(400, "Malformed input request: the body must be a JSON object.")
            kind = bedrock_wire.stability_kind(model_id)
            if kind is None:
                self._nova(model_id, doc)
            else:
                self._stability(model_id, kind, doc)
        except ApiError as exc:
            if not self._headers_sent:
                self._send_bedrock_error(exc.status, exc.message)
            else:
                self.close_connection = True

    def _nova(self, model_id: str, doc: dict[str, Any]) -> None:
        request = bedrock_wire.read_request(doc)
        fault = self.emulator._next_fault(request.directive)
        if self._apply_fault(fault, lambda f, status: ApiError(status, f.message or "")):
            return
        payload, spoiled = bedrock_wire.answer(bedrock_wire.pictures(model_id, doc, request), fault)
        if spoiled:
            self._send_bytes(200, payload, "application/json")
        else:
            self._send_bytes(200, payload, "application/json", {"x-amzn-RequestId": self.request_id})

    def _stability(self, model_id: str, kind: str, doc: dict[str, Any]) -> None:
        request = bedrock_wire.read_stability(kind, doc)
        fault = self.emulator._next_fault(request.directive)
        if self._apply_fault(fault, lambda f, status: ApiError(status, f.message or "")):
            return
        payload, spoiled = bedrock_wire.stability_answer(model_id, request, fault)
        headers = {} if spoiled else {"x-amzn-RequestId": self.request_id}
        self._send_bytes(200, payload, "application/json", headers)


class Emulator:
    """A real HTTP test double of OpenAI / Azure OpenAI / Bedrock (Nova Canvas) image endpoints, served from
    a daemon thread.

    >>> with Emulator() as emu:
    ...     client = OpenAI(base_url=emu.base_url + "/v1", api_key="x")
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, api_key: str | None = None) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.requests: list[RecordedRequest] = []
        self.log_requests = False  # one access-log line per request to stderr (the CLI turns it on)
        self._lock = threading.Lock()
        self._faults = FaultPlan()
        self._files: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def base_url(self) -> str:
        """http://host:port, without /v1 (the actual port once started)."""
        host = self.host
        if host in ("", "0.0.0.0"):  # noqa: S104 - only used to build a URL a client can reach
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def start(self) -> Emulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _Server((self.host, self.port), self)
        self.port = server.server_address[1]  # keep the port: a restart serves on the same base_url
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()  # wakes requests sleeping in a delay fault
        server.shutdown()
        server.server_close()
        server.close_connections()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- faults and records ---------------------------------------------------------------------

    def add_faults(self, *faults: Fault | dict[str, Any]) -> None:
        """Queue faults; each image request consumes one, in order."""
        self._faults.add(*faults)

    def set_fault_mode(self, fault: Fault | dict[str, Any] | None) -> None:
        """Apply `fault` to every image request (after queued faults run out) until cleared with None."""
        self._faults.set_mode(fault)

    def reset(self) -> None:
        """Forget recorded requests, queued faults and the fault mode (served files stay)."""
        with self._lock:
            self.requests.clear()
        self._faults.clear()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _snapshot(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self.requests)

    def _next_fault(self, directive: Fault | None) -> Fault | None:
        return self._faults.next(directive)

    def _fault_state(self) -> dict[str, Any]:
        return self._faults.state()

    def _store_file(self, data: bytes, content_type: str) -> str:
        file_id = "img-" + hashlib.sha256(data).hexdigest()[:32]
        with self._lock:
            self._files[file_id] = (data, content_type)
            self._files.move_to_end(file_id)
            while len(self._files) > MAX_STORED_FILES:
                self._files.popitem(last=False)
        return file_id

    def _get_file(self, file_id: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self._files.get(file_id)


_DESCRIPTION = """\
Run the upstream emulator: a TEST DOUBLE of upstream image services (OpenAI, Azure OpenAI, Bedrock).
It is NOT an image model and generates nothing meaningful: it answers the OpenAI Images API
(generations, edits, variations; Azure deployment routes too) and Amazon Bedrock's InvokeModel for
Nova Canvas (POST /model/{modelId}/invoke, signature not checked) with deterministic placeholder
pictures (coloured shapes drawn from a hash of the prompt), and can inject faults (errors, delays,
dropped connections, malformed bodies). For local development and tests only; never point real
users or production traffic at it.
"""

_EPILOG = """\
examples:
  imagegw emulator --port 8089
  OPENAI_BASE_URL=http://127.0.0.1:8089/v1 python my_client.py
  curl -X POST localhost:8089/_emulator/faults -d '{"faults":[{"status":429,"retry_after":"1"}]}'
  a prompt containing [[emulator:500]], [[emulator:429]], [[emulator:delay=2.5]], [[emulator:drop]],
  [[emulator:malformed]] or [[emulator:truncated]] makes that one request fail that way.
"""


def main(argv: list[str] | None = None) -> int:
    """`imagegw emulator --port N [--host H] [--api-key K]`: serve until Ctrl-C."""
    args_in = list(sys.argv[1:] if argv is None else argv)
    if args_in[:1] == ["emulator"]:
        args_in = args_in[1:]
    parser = argparse.ArgumentParser(
        prog="imagegw emulator",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_CLI_PORT,
        help=f"port to listen on (default {DEFAULT_CLI_PORT}; 0 picks a free port)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--api-key",
        default=None,
        help="if set, require 'Authorization: Bearer KEY' (OpenAI) or 'api-key: KEY' (Azure)",
    )
    parser.add_argument("--quiet", action="store_true", help="no access log on stderr")
    args = parser.parse_args(args_in)

    emulator = Emulator(host=args.host, port=args.port, api_key=args.api_key)
    emulator.log_requests = not args.quiet
    try:
        emulator.start()
    except OSError as exc:
        print(f"imagegw emulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    print(
        f"imagegw emulator (a TEST DOUBLE, not an image model) serving on {emulator.base_url} "
        f"(OpenAI base URL {emulator.base_url}/v1); Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _terminate)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
    print("imagegw emulator: stopped", file=sys.stderr)
    return 0
