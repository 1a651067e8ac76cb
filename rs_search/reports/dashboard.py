"""optuna-dashboard on the study storage, served until a stop is requested.

The dashboard reads Optuna's own tables (DESIGN.md section 3, "Storage": the schema is Optuna's,
unchanged), so it shows every study in the storage with its trials, values, user attributes
(``arch``, ``curve``, ...) and the study settings. optuna-dashboard has no authentication, so it
binds to loopback unless the user names another address. Served with the standard library's
threaded WSGI server, which is what ``optuna-dashboard`` itself falls back to; ``serve`` returns
once ``stop`` is set (the CLI sets it on SIGINT/SIGTERM) after the server has closed its socket.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from rs_search.errors import StorageError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client must not hold up the shutdown


def _default_accept_encoding(app: Any) -> Any:
    """optuna-dashboard answers 500 for ``/static/bundle.js`` when a request has no
    ``Accept-Encoding`` header (it indexes the header unconditionally; DESIGN.md section 5), which
    is what curl and scripts send; an absent header means "identity" (RFC 9110, 12.5.3)."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        environ.setdefault("HTTP_ACCEPT_ENCODING", "identity")
        return app(environ, start_response)

    return wrapped


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        pass


def serve(
    storage: Any,
    *,
    host: str,
    port: int,
    stop: threading.Event,
    on_ready: Callable[[str], None] = lambda address: None,
) -> None:
    """Serve optuna-dashboard for ``storage`` (an open Optuna storage, ``rs_search.study``) on
    ``host:port`` until ``stop`` is set."""
    from optuna_dashboard import wsgi

    try:
        server = make_server(
            host,
            port,
            _default_accept_encoding(wsgi(storage)),
            server_class=_Server,
            handler_class=_QuietHandler,
        )
    except OSError as exc:
        raise StorageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
            "choose another address with --host/--port"
        ) from None
    thread = threading.Thread(
        target=server.serve_forever,
        kwargs={"poll_interval": 0.2},
        name="optuna-dashboard",
        daemon=True,
    )
    thread.start()
    try:
        bound_host, bound_port = str(server.server_address[0]), int(server.server_address[1])
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        on_ready(f"http://{shown}:{bound_port}/")
        while not stop.wait(0.5):  # a timed wait: signal handlers run between the waits
            pass
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
