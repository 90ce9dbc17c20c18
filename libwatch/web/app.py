"""The ASGI application: the dashboard, the JSON API under /api/v1/, and /metrics.

Every document comes from the services the CLI prints (`libwatch.services.reports`) and is
serialised by the CLI's own `to_json`, so `GET /api/v1/libraries/NAME` is `status NAME --json`.
"""
from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from importlib import resources
from typing import Annotated, Any, Final, Literal

import anyio.to_thread
from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from libwatch import systemd
from libwatch.cli.output import counted, duration, number, size, to_json, when
from libwatch.config import Settings
from libwatch.errors import EXIT_USAGE, LibwatchError, Locked, NotFound, ServiceUnavailable
from libwatch.result import ErrorResult
from libwatch.services import reports
from libwatch.web import auth, broker, charts, controls, metrics
from libwatch.web.catalog import Catalog, Db

log = logging.getLogger("libwatch.web")

API: Final = "/api/v1"
REFRESH_S: Final = 10
PAGE_SIZE: Final = 20
CHART_RUNS: Final = 500
# Notices a redirect may ask the page to show; the query names one, never its text.
NOTICES: Final = {
    "scan": "scan started", "pause": "paused", "resume": "resumed", "enable": "enabled", "disable": "disabled",
    "schedule": "schedule changed", "rebuild-failed": "rebuild of the failed renders started",
    "rebuild-missing": "rebuild of the missing cache files started",
}
# Every answer: only this server's own script and style, never inside another site's frame
# (a framed page would take the admin's clicks as same-origin POSTs).
SECURITY_HEADERS: Final = (
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"same-origin"),
)
_STATES: Final = {"pause": {"paused": True}, "resume": {"paused": False}, "enable": {"enabled": True},
                  "disable": {"enabled": False}}


def _http_status(error: LibwatchError) -> int:
    if isinstance(error, NotFound):
        return 404
    if isinstance(error, (ServiceUnavailable, Locked)):
        return 503
    return 400 if error.exit_code == 2 else 409


def error_document(error: LibwatchError) -> dict[str, Any]:
    """The CLI's `--json` error document: the condition's kind, its one-line message and its exit code."""
    return ErrorResult(error.kind, str(error), error.exit_code).to_document()


def json_response(document: Mapping[str, Any], status_code: int = 200) -> Response:
    return Response(to_json(document), status_code=status_code, media_type="application/json")


def _templates() -> Jinja2Templates:
    folder = resources.files("libwatch") / "web" / "templates"
    templates = Jinja2Templates(directory=str(folder))
    templates.env.filters.update(when=when, duration=duration, size=size, number=number, counted=counted)
    templates.env.globals.update(refresh_s=REFRESH_S, api=API)
    return templates


class Guard:
    """The access rules of `libwatch.web.auth` as ASGI middleware (before any route runs)."""

    def __init__(self, app: Any, access: auth.Access, check_host: bool) -> None:
        self.app, self.access, self.check_host = app, access, check_host

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        # scrypt takes about 50 ms: off the event loop, so a flood of guesses does not stall other requests.
        refusal = await anyio.to_thread.run_sync(self.refusal, scope["method"], headers)

        async def secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        if refusal is None:
            await self.app(scope, receive, secured)
            return
        status, text, extra = refusal
        body = to_json(ErrorResult("Forbidden" if status == 403 else "Unauthorized", text, EXIT_USAGE).to_document())
        await secured({"type": "http.response.start", "status": status,
                       "headers": [(b"content-type", b"application/json"), *extra]})
        await secured({"type": "http.response.body", "body": body.encode()})

    def refusal(self, method: str, headers: Mapping[str, str]) -> tuple[int, str, list[tuple[bytes, bytes]]] | None:
        """Why a request is refused (status, message, headers), or None to let it through."""
        if self.check_host and not auth.local_host(headers.get("host")):
            return 403, "this server answers only to localhost names (no authentication is configured)", []
        if not auth.authorized(self.access, headers.get("authorization")):
            return 401, "authentication required", [(b"www-authenticate", b'Basic realm="libwatch", charset="UTF-8"')]
        if method not in ("GET", "HEAD", "OPTIONS") and auth.cross_site(headers, headers.get("host")):
            return 403, "cross-site request refused", []
        return None


def create_app(settings: Settings, access: auth.Access, *, check_host: bool = True) -> Any:
    """The application for these settings and access rule (the guard wraps everything, static files too)."""
    catalog = Catalog(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> Any:
        yield
        catalog.close()

    app = FastAPI(title="libwatch", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=f"{API}/openapi.json",
                  description="The documents of `libwatch status`, `history`, `events` and `failed` with `--json`, "
                              "and the controls of the management page.")
    app.mount("/static", StaticFiles(packages=[("libwatch.web", "static")]), name="static")
    templates = _templates()
    routes(app, catalog, templates)
    return Guard(app, access, check_host)


def routes(app: FastAPI, catalog: Catalog, templates: Jinja2Templates) -> None:  # noqa: C901 - one route list
    """Attach every page, API and metrics route to `app`."""
    settings = catalog.settings
    session = catalog.session

    @app.exception_handler(LibwatchError)
    async def libwatch_error(request: Request, error: LibwatchError) -> Response:
        if request.url.path.startswith(API) or request.url.path == "/metrics":
            return json_response(error_document(error), _http_status(error))
        return templates.TemplateResponse(request, "error.html", {"error": error}, status_code=_http_status(error))

    # ------------------------------------------------------------ JSON API

    @app.get(f"{API}/libraries", summary="Every library: `libwatch status --json`")
    def api_status() -> Response:
        with session() as db:
            return json_response(reports.status(db).to_document())

    @app.get(f"{API}/libraries/{{name}}", summary="One library: `libwatch status NAME --json`")
    def api_library(name: str) -> Response:
        with session() as db:
            return json_response(reports.status(db, name).to_document())

    @app.get(f"{API}/libraries/{{name}}/history", summary="Runs: `libwatch history NAME --json`")
    def api_history(name: str, job: Annotated[list[str] | None, Query()] = None,
                    status: Annotated[list[str] | None, Query()] = None,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
                    page: Annotated[int, Query(ge=1, le=1000)] = 1) -> Response:
        with session() as db:
            return json_response(history_page(db, name, job or (), status or (), limit, page))

    @app.get(f"{API}/libraries/{{name}}/events", summary="Change events: `libwatch events NAME --json`")
    def api_events(name: str, type: Annotated[list[str] | None, Query()] = None,  # noqa: A002 - the CLI's word
                   since: str | None = None, path: str | None = None,
                   limit: Annotated[int, Query(ge=1, le=10000)] = 50) -> Response:
        moment = None if not since else reports.parse_when(since)
        with session() as db:
            events = reports.events(db, name, types=type or (), since=moment, path=path, limit=limit)
            return json_response(events.to_document())

    @app.get(f"{API}/libraries/{{name}}/failed",
             summary="Failed renders and unreadable files: `libwatch failed NAME --json`")
    def api_failed(name: str, limit: Annotated[int, Query(ge=1, le=10000)] = 100) -> Response:
        with session() as db:
            return json_response(reports.failed(db, name, limit=limit).to_document())

    @app.get(f"{API}/broker", summary="Queue depths and workers seen recently")
    def api_broker() -> Response:
        with session() as db:
            return json_response({**broker.queues(settings), "workers": broker.workers(db)})

    @app.post(f"{API}/libraries/{{name}}/run", summary="Start a scan now (`libwatch-scan@NAME.service` or a child)")
    def api_run(name: str) -> Response:
        with session() as db:
            return json_response(controls.run_now(db, settings, name).to_document(), 202)

    @app.post(f"{API}/libraries/{{name}}/schedule", summary="Change the OnCalendar= schedule")
    def api_schedule(name: str, on_calendar: Annotated[str, Query()]) -> Response:
        with session() as db:
            return json_response(controls.set_options(db, settings, name, on_calendar=on_calendar).to_document())

    @app.post(f"{API}/libraries/{{name}}/rebuild/{{selection}}", summary="Rebuild the failed or missing renders")
    def api_rebuild(name: str, selection: Literal["failed", "missing"]) -> Response:
        with session() as db:
            return json_response(controls.rebuild(db, settings, name, selection).to_document(), 202)

    @app.post(f"{API}/libraries/{{name}}/{{action}}", summary="pause, resume, enable or disable the library")
    def api_state(name: str, action: Literal["pause", "resume", "enable", "disable"]) -> Response:
        with session() as db:
            return json_response(controls.set_options(db, settings, name, **_STATES[action]).to_document())

    # ------------------------------------------------------------ metrics

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def prometheus() -> Response:
        with session() as db:
            status = reports.status(db).to_document()
        return Response(metrics.exposition(status, broker.queues(settings)),
                        media_type="text/plain; version=0.0.4; charset=utf-8")

    # ------------------------------------------------------------ pages

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard(request: Request, notice: str | None = None) -> Response:
        with session() as db:
            status = reports.status(db).to_document()
            workers = broker.workers(db)
        return templates.TemplateResponse(request, "dashboard.html", {
            "libraries": status["libraries"], "generated_at": status["generated_at"],
            "queues": broker.queues(settings), "workers": workers, "notice": NOTICES.get(notice or ""),
            "watched": {lib["name"]: controls.watched_folders(lib["name"]) for lib in status["libraries"]},
            "watch_cap": systemd.DEFAULT_WATCH_CAP})

    @app.get("/libraries/{name}", response_class=HTMLResponse, include_in_schema=False)
    def library_page(request: Request, name: str, page: Annotated[int, Query(ge=1, le=1000)] = 1,
                     type: Annotated[list[str] | None, Query()] = None,  # noqa: A002 - the CLI's word
                     since: str | None = None, notice: str | None = None) -> Response:
        moment = None if not since else reports.parse_when(since)
        with session() as db:
            status = reports.status(db, name).to_document()
            lib = status["libraries"][0]
            runs = history_page(db, name, (), (), PAGE_SIZE, page)["runs"]
            events = reports.events(db, name, types=type or (), since=moment, limit=PAGE_SIZE).to_document()["events"]
            scans = reports.history(db, name, jobs=["scan"], limit=CHART_RUNS).to_document()["runs"]
            failed = reports.failed(db, name, limit=PAGE_SIZE).to_document()
        return templates.TemplateResponse(request, "library.html", {
            "lib": lib, "runs": runs, "page": page, "events": events, "types": type or [], "since": since or "",
            "failed": failed, "rebuilds": controls.rebuild_choices(), "all_types": reports.CHANGE_TYPES,
            "generated_at": status["generated_at"], "notice": NOTICES.get(notice or ""), "page_size": PAGE_SIZE,
            "charts": [charts.changes_per_day(scans), charts.durations(lib["recent"])]})

    def back(name: str, notice: str, to: str | None) -> RedirectResponse:
        target = f"/libraries/{name}" if to == "library" else "/"
        return RedirectResponse(f"{target}?notice={notice}", status_code=303)

    @app.post("/libraries/{name}/run", include_in_schema=False)
    def page_run(name: str, to: Annotated[str | None, Form()] = None) -> Response:
        with session() as db:
            controls.run_now(db, settings, name)
        return back(name, "scan", to)

    @app.post("/libraries/{name}/schedule", include_in_schema=False)
    def page_schedule(name: str, on_calendar: Annotated[str, Form()],
                      to: Annotated[str | None, Form()] = None) -> Response:
        with session() as db:
            changed = controls.set_options(db, settings, name, on_calendar=on_calendar.strip())
        for problem in changed.problems:
            log.warning("library %s: %s", name, problem)
        return back(name, "schedule", to)

    @app.post("/libraries/{name}/rebuild/{selection}", include_in_schema=False)
    def page_rebuild(name: str, selection: str, to: Annotated[str | None, Form()] = None) -> Response:
        with session() as db:
            controls.rebuild(db, settings, name, selection)
        return back(name, f"rebuild-{selection}", to)

    @app.post("/libraries/{name}/{action}", include_in_schema=False)
    def page_state(name: str, action: str, to: Annotated[str | None, Form()] = None) -> Response:
        if action not in _STATES:
            raise NotFound(f"no action {action!r}")
        with session() as db:
            changed = controls.set_options(db, settings, name, **_STATES[action])
        for problem in changed.problems:
            log.warning("library %s: %s", name, problem)
        return back(name, action, to)


def history_page(db: Db, name: str, jobs: Any, statuses: Any, limit: int, page: int) -> dict[str, Any]:
    """Page `page` of `limit` runs: the `history` document of the first `page * limit` runs, cut to the last page.

    Page 1 is exactly `libwatch history NAME --limit N --json`.
    """
    document = reports.history(db, name, jobs=jobs, statuses=statuses, limit=limit * page).to_document()
    return {**document, "runs": document["runs"][limit * (page - 1):]}
