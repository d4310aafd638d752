"""moto's server as the local stack runs it: one DynamoDB request at a time.

moto's threaded server answers requests on many threads with no lock around DynamoDB's conditional
updates or its transactions: two racing `ADD ... IF used <= max` can both pass (11 of 100 admitted against
a limit of 10 in a test), and a TransactWriteItems that copies a table while another thread writes to it
fails with "dictionary changed size during iteration". Real DynamoDB serializes the writes to one item and
runs transactions atomically. One lock around moto's DynamoDB requests models that: requests still arrive
concurrently over HTTP, moto answers DynamoDB's one after another. Only DynamoDB's: an SQS ReceiveMessage
long-polls inside moto for up to 20 s, and holding the lock that long would stall every other call.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from moto.server import ThreadedMotoServer
from werkzeug.serving import make_server


class SerializedMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose app answers one DynamoDB request at a time."""

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        lock = threading.Lock()

        def serialized(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB"):
                return app(environ, start_response)
            with lock:
                return list(app(environ, start_response))

        self._server = make_server(
            self._ip_address, self._port, serialized, True, request_handler=MotoRequestHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
