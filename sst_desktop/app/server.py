"""The bottle app: UI files, images, masks and the `Api` methods as JSON POSTs, behind a launch token."""

from __future__ import annotations

import contextlib
import hmac
import html
import io
import json
import logging
import logging.handlers
import secrets
import socket
import sys
import threading
import webbrowser
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from urllib.parse import quote
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import bottle

from sst_desktop import paths
from sst_desktop.app import media
from sst_desktop.app.api import API_METHODS, Api, services
from sst_desktop.app.arguments import ArgumentError
from sst_desktop.app.exposed import plain
from sst_desktop.data import images
from sst_desktop.errors import UserError

log = logging.getLogger(__name__)

COOKIE_NAME = "sst_token"
# Sec-Fetch-Site values of the UI's own requests (and of a URL typed into the address bar).
CALLER_SITES = ("same-origin", "none")
# CSV uploads travel as base64 in one JSON body; bottle's default cap is 100 kB.
MAX_BODY_BYTES = 256 * 1024 * 1024
DEFAULT_IMAGE_MAX = 4096
THUMB_MAX = 256

_logging_lock = threading.Lock()
_logging_ready = False


def configure_logging() -> Path:
    """Send this package's log records (with tracebacks) to a rotating file under the data dir."""
    global _logging_ready
    log_dir = paths.data_dir() / "logs"
    log_file = log_dir / "sst-desktop.log"
    with _logging_lock:
        if _logging_ready:
            return log_file
        log_dir.mkdir(parents=True, exist_ok=True)
        # An append-only log is the one file not written atomically: a torn last line is harmless.
        handler = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=2_000_000, backupCount=3, encoding="utf-8"
        )
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s")
        )
        package_log = logging.getLogger("sst_desktop")
        package_log.addHandler(handler)
        if package_log.level == logging.NOTSET or package_log.level > logging.INFO:
            package_log.setLevel(logging.INFO)
        _logging_ready = True
    return log_file


def new_token() -> str:
    """A fresh random launch token."""
    return secrets.token_urlsafe(24)


def _json_response(payload: Any, status: int = 200) -> bottle.HTTPResponse:
    body = json.dumps(payload, ensure_ascii=False, default=plain)
    return bottle.HTTPResponse(
        body=body,
        status=status,
        headers={"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"},
    )


def _bytes_response(
    data: bytes, content_type: str, etag: str | None = None, cache: str = "private, no-cache"
) -> bottle.HTTPResponse:
    headers = {"Content-Type": content_type, "Cache-Control": cache}
    if etag:
        headers["ETag"] = etag
        if bottle.request.headers.get("If-None-Match") == etag:
            return bottle.HTTPResponse(status=304, headers=headers)
    headers["Content-Length"] = str(len(data))
    return bottle.HTTPResponse(body=data, status=200, headers=headers)


def _file_etag(path: Path, extra: str = "") -> str:
    st = path.stat()
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}{"-" + extra if extra else ""}"'


def _encode_jpeg(image: Any, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _int_query(name: str, default: int, low: int, high: int) -> int:
    raw = bottle.request.query.get(name)
    if raw in (None, ""):
        return default
    try:
        return max(low, min(high, int(raw)))
    except ValueError:
        raise bottle.HTTPError(400, f"Query parameter {name}={raw!r} must be an integer.") from None


def make_app(api: Api, token: str, ui_dir: str | Path) -> bottle.Bottle:
    """The bottle app serving `ui_dir`, project images and masks, and `api`'s public methods."""
    store, sessions = services(api).store, services(api).sessions
    bottle.BaseRequest.MEMFILE_MAX = MAX_BODY_BYTES
    ui_dir = Path(ui_dir).resolve()
    app = bottle.Bottle()
    app.config["sst.token"] = token

    def token_guard(callback):
        """Refuse every request without the launch token: 401 when absent, 403 when wrong."""

        def wrapper(*args, **kwargs):
            request = bottle.request
            from_url = request.query.get("token")
            given = from_url or request.get_cookie(COOKIE_NAME)
            if not given:
                return _refuse(401, "This SST Desktop server needs its launch token.")
            if not hmac.compare_digest(str(given).encode(), token.encode()):
                return _refuse(403, "Wrong SST Desktop token: it changes at every launch.")
            if not from_url:
                # Browsers send the cookie with requests from other local sites too (another
                # port is the same site): the API needs the URL token, and no other site may
                # use the cookie for anything.
                if request.path.startswith("/api/"):
                    return _refuse(403, "API calls need the launch token in the URL (?token=…).")
                if request.headers.get("Sec-Fetch-Site", "same-origin") not in CALLER_SITES:
                    return _refuse(403, "Requests from other sites are refused.")
            return callback(*args, **kwargs)

        return wrapper

    app.install(token_guard)

    def guarded(fn):
        """Run a file route: unknown project/frame → 404, anything unexpected → logged 500."""

        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except bottle.HTTPResponse:
                raise
            except UserError as exc:
                return bottle.HTTPResponse(body=str(exc), status=404)
            except FileNotFoundError:
                return bottle.HTTPResponse(body="Not found.", status=404)
            except Exception as exc:
                log.error("%s %s failed", bottle.request.method, bottle.request.path, exc_info=exc)
                return bottle.HTTPResponse(body=f"{type(exc).__name__}: {exc}", status=500)

        wrapper.__name__ = fn.__name__
        return wrapper

    @app.get("/")
    def index():
        given = bottle.request.query.get("token")
        response = bottle.static_file("index.html", root=str(ui_dir))
        if given:
            # Lets module imports and <img> tags without ?token= through; strict: no cross-site use.
            response.set_cookie(COOKIE_NAME, given, path="/", httponly=True, samesite="strict")
        response.set_header("Cache-Control", "no-store")
        return response

    @app.get("/ui/<path:path>")
    def ui_file(path: str):
        return _static(ui_dir, path)

    @app.get("/image/<project_id>/<pk:path>")
    @guarded
    def image(project_id: str, pk: str):
        path = store.image_path(project_id, pk)
        max_side = _int_query("max", DEFAULT_IMAGE_MAX, 16, 16384)
        etag = _file_etag(path, f"m{max_side}")
        if bottle.request.headers.get("If-None-Match") == etag:
            return _bytes_response(b"", "image/jpeg", etag)
        preview = images.load_preview(path, max_side)
        return _bytes_response(_encode_jpeg(preview), "image/jpeg", etag)

    @app.get("/thumb/<project_id>/<pk:path>")
    @guarded
    def thumb(project_id: str, pk: str):
        path = store.image_path(project_id, pk)
        max_side = _int_query("max", THUMB_MAX, 16, 1024)
        etag = _file_etag(path, f"t{max_side}")
        if bottle.request.headers.get("If-None-Match") == etag:
            return _bytes_response(b"", "image/jpeg", etag)
        return _bytes_response(images.thumbnail_bytes(path, max_side), "image/jpeg", etag)

    @app.get("/mask/<project_id>/<kind>/<pk:path>")
    @guarded
    def mask(project_id: str, kind: str, pk: str):
        if kind not in media.MASK_KINDS:
            return bottle.HTTPResponse(body="Mask kind must be ref or pred.", status=404)
        if not pk.endswith(".png"):
            return bottle.HTTPResponse(body="Mask URLs end in .png.", status=404)
        path = store.mask_path(project_id, kind, pk[: -len(".png")])
        if not path.is_file():
            return bottle.HTTPResponse(body=f"No {kind} mask for this frame yet.", status=404)
        query = bottle.request.query
        color = query.get("color") in ("1", "true", "yes")
        # Grid tiles ask for a thumbnail-sized, outlined overlay (?max=256&outline=1).
        max_side = _int_query("max", 0, 0, 16384) if color else 0
        outline = color and query.get("outline") in ("1", "true", "yes")
        etag = _file_etag(path, f"c{max_side}{'o' if outline else ''}" if color else "r")
        if bottle.request.headers.get("If-None-Match") == etag:
            return _bytes_response(b"", "image/png", etag)
        if not color:
            return _bytes_response(path.read_bytes(), "image/png", etag)
        # Decoding is bounded by the frame's image size, not only by the global pixel limit.
        image_size = images.image_size(store.image_path(project_id, pk[: -len(".png")]))
        png = media.colored_mask_png(
            path, max_side=max_side, outline=outline, expected_size=image_size
        )
        return _bytes_response(png, "image/png", etag)

    @app.get("/candidate/<project_id>/<pk:path>/<index:int>.png")
    @guarded
    def candidate(project_id: str, pk: str, index: int):
        max_side = _int_query("max", 0, 0, 16384) or None  # the label canvas asks for <= 1024
        data, version = sessions.mask_png(project_id, pk, index, max_side)
        return _bytes_response(data, "image/png", f'"w{version}"')

    @app.post("/api/<name>")
    def call_api(name: str):
        if bottle.request.content_type.split(";")[0].strip().lower() != "application/json":
            # Only JSON: a cross-site page cannot send it without a CORS preflight (refused).
            return _json_response(
                {"ok": False, "error": "API calls must be POSTed as application/json."}, 415
            )
        if name not in API_METHODS or name.startswith("_"):
            return _json_response({"ok": False, "error": f"Unknown API method {name!r}."}, 404)
        method = getattr(api, name, None)
        if not callable(method):
            return _json_response({"ok": False, "error": f"Unknown API method {name!r}."}, 404)
        try:
            raw = bottle.request.body.read()
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError):
            return _json_response({"ok": False, "error": "Request body must be JSON."}, 400)
        except RecursionError:
            return _json_response({"ok": False, "error": "Request body is nested too deeply."}, 400)
        args = body.get("args", []) if isinstance(body, dict) else None
        if not isinstance(args, list):
            return _json_response({"ok": False, "error": 'Body must be {"args": [...]}.'}, 400)
        try:
            result = method(*args)  # `exposed` checks the arguments' types first
        except ArgumentError as exc:
            return _json_response({"ok": False, "error": str(exc)}, 400)
        except UserError as exc:
            return _json_response({"ok": False, "error": str(exc)})
        except Exception as exc:
            # Api methods already log and reword unexpected errors; this catches the rest.
            log.error("api %s failed", name, exc_info=exc)
            text = str(exc) if getattr(exc, "_sst_described", False) else None
            return _json_response({"ok": False, "error": text or f"{type(exc).__name__}: {exc}"})
        return _json_response({"ok": True, "result": result})

    @app.get("/favicon.ico")
    def favicon():
        path = ui_dir / "favicon.ico"
        if path.is_file():
            return bottle.static_file("favicon.ico", root=str(ui_dir))
        return bottle.HTTPResponse(status=204)

    # The UI may reference its files relative to "/" (index.html is served there).
    @app.get("/<path:path>")
    def ui_fallback(path: str):
        return _static(ui_dir, path)

    return app


def _static(ui_dir: Path, path: str):
    """A UI file; bottle's static_file refuses anything resolving outside `ui_dir` (403)."""
    response = bottle.static_file(path, root=str(ui_dir))
    if isinstance(response, bottle.HTTPResponse) and response.status_code == 200:
        # The UI changes between versions: always revalidate (cheap 304s via Last-Modified).
        response.set_header("Cache-Control", "no-cache")
    return response


def _refuse(status: int, message: str) -> bottle.HTTPResponse:
    if bottle.request.path.startswith("/api/"):
        return _json_response({"ok": False, "error": message}, status)
    body = REFUSED_PAGE.format(message=html.escape(message))
    return bottle.HTTPResponse(
        body=body.encode("utf-8"),
        status=status,
        headers={"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-store"},
    )


# Shown to a browser that comes without the token (a bare address, an old bookmark): styled like
# the app, in UTF-8, and saying where the right URL is.
REFUSED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>SST Desktop</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #101828;
  background: #f5f7fa; margin: 0; display: grid; place-items: center; min-height: 100vh; }}
main {{ background: #fff; border: 1px solid #e4e7ec; border-radius: 10px; padding: 24px 28px;
  max-width: 560px; box-shadow: 0 4px 16px rgba(16, 24, 40, 0.08); }}
h1 {{ font-size: 18px; margin: 0 0 8px; }}
code {{ background: #f2f4f7; padding: 1px 5px; border-radius: 4px; }}
li {{ margin: 4px 0; }}
</style></head>
<body><main><h1>SST Desktop needs the address with its token</h1>
<p>{message}</p>
<p>Open the full URL that SST Desktop printed as the first line in its terminal; it ends in
<code>?token=…</code> and changes at every launch:</p>
<ul><li><code>sst-desktop --serve</code> prints it when it starts;</li>
<li><code>sst-desktop</code> prints it when the window cannot open and it serves the app to the
browser instead.</li></ul>
<p>Lost it? Stop the server (Ctrl+C) and start it again for a new one.</p></main></body></html>
"""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """wsgiref's server, one thread per request, so images load while an API call runs."""

    daemon_threads = True
    allow_reuse_address = True
    # listen() backlog: a page's thumbnails plus a few scripts arrive at once; the default of 5
    # made the kernel reset connections beyond it (the OS may cap it, e.g. net.core.somaxconn).
    request_queue_size = 1024


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
        log.debug("%s - %s", self.address_string(), format % args)

    def handle(self) -> None:
        # The browser may navigate away mid-download.
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            super().handle()


@dataclass
class RunningServer:
    """A server started by `start_server`: its URL (token included) and how to stop it."""

    httpd: WSGIServer
    thread: threading.Thread | None
    host: str
    port: int
    token: str

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.base_url}/?token={quote(self.token)}"

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self.httpd.shutdown()
        self.httpd.server_close()


def create_server(
    api: Api, host: str = "127.0.0.1", port: int = 0, token: str | None = None
) -> RunningServer:
    """Bind a threaded WSGI server for `api` on host:port (0 = a free port); not yet serving."""
    token = token or new_token()
    app = make_app(api, token, paths.resource_dir("ui"))
    server_class = _ThreadingServer
    if ":" in host:
        server_class = type(
            "_ThreadingServer6", (_ThreadingServer,), {"address_family": socket.AF_INET6}
        )
    try:
        httpd = make_server(host, port, app, server_class=server_class, handler_class=_QuietHandler)
    except OSError as exc:
        raise UserError(
            f"Cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port."
        ) from None
    return RunningServer(httpd=httpd, thread=None, host=host, port=httpd.server_port, token=token)


def start_server(
    api: Api, host: str = "127.0.0.1", port: int = 0, token: str | None = None
) -> RunningServer:
    """Bind and serve in a daemon thread (the window mode and tests)."""
    running = create_server(api, host=host, port=port, token=token)
    thread = threading.Thread(
        target=running.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
    )
    thread.start()
    running.thread = thread
    return running


def serve(
    port: int = 0,
    host: str = "127.0.0.1",
    view: list[str] | None = None,
    *,
    open_browser: bool = False,
    fragment: str = "",
) -> int:
    """`sst-desktop --serve`: print the URL (token included) first, then serve until interrupted.

    `open_browser` also opens the URL (+ `fragment`, e.g. "#/p/<id>") in the default web browser,
    when there is one (the window's fallback).
    """
    configure_logging()
    api = Api(mode="browser", view=view)
    running = create_server(api, host=host, port=port)
    # The very first stdout line is the URL: scripts and the SSH-tunnel instructions rely on it.
    print(running.url, flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: listening on {host}, reachable from other machines; the token is the only guard.",
            file=sys.stderr,
            flush=True,
        )
    print(
        "SST Desktop is serving; open the URL above in a browser (Ctrl+C stops).",
        file=sys.stderr,
        flush=True,
    )
    if open_browser:
        # A thread: a browser command that waits for its window must not hold up the server.
        threading.Thread(
            target=_open_in_browser, args=(running.url + fragment,), name="browser", daemon=True
        ).start()
    services(api).start_background_setup()
    try:
        running.httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr, flush=True)
    finally:
        running.httpd.server_close()
        services(api).shutdown()
    return 0


def _open_in_browser(url: str) -> None:
    """Open `url` in the default web browser ($BROWSER, xdg-open, ...); say so if there is none."""
    try:
        opened = webbrowser.open(url)
    except Exception as exc:  # a broken browser command must not stop the server
        log.info("opening a browser failed: %s", exc)
        opened = False
    if not opened:
        print("No web browser found here: open the URL above in one.", file=sys.stderr, flush=True)
