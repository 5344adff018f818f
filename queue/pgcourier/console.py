"""The live console: a small web app over one or more pgcourier databases.

`create_app({"main": url})` gives a Starlette app (the `console` extra:
pip install 'pgcourier[console]'); `python -m pgcourier console` serves it.

Anyone who can reach it may look; changing anything (retrying or purging dead
letters) needs the operator token: POST /login with it opens a session (an
HttpOnly, SameSite=Strict cookie), and every change is a POST carrying the
session's CSRF token in a form field and, when the browser sends one, an Origin of
this console. Without a configured token the console is read-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from . import console_pages as pages
from .console_data import ConsoleDatabase
from .errors import InvalidNameError, QueueNotFoundError

STATIC = Path(__file__).resolve().parent / "console_static"
COOKIE = "pgcourier_console"
SESSION_TTL_S = 12 * 3600
MAX_FORM_BYTES = 256 * 1024
DEAD_LETTERS_SHOWN = 200
SECURITY_HEADERS = {
    # Scripts and styles from this console only, never inline; no framing.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(slots=True)
class Session:
    csrf: str
    expires_at: float


class Sessions:
    """Operator sessions, in this process's memory (a restart logs everyone out)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Session] = {}

    def open(self) -> str:
        now = time.monotonic()
        self._by_id = {k: s for k, s in self._by_id.items() if s.expires_at > now}
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = Session(secrets.token_urlsafe(32), now + SESSION_TTL_S)
        return sid

    def get(self, sid: str | None) -> Session | None:
        session = self._by_id.get(sid or "")
        if session is None or session.expires_at <= time.monotonic():
            return None
        return session

    def close(self, sid: str | None) -> None:
        self._by_id.pop(sid or "", None)


class Console:
    def __init__(
        self,
        databases: Mapping[str, str],
        *,
        token: str | None = None,
        sample_interval_s: float = 2.0,
        history_s: float = 300.0,
    ) -> None:
        if not databases:
            raise ValueError("the console needs at least one database")
        self.databases = {
            name: ConsoleDatabase(
                name, url, sample_interval_s=sample_interval_s, history_s=history_s
            )
            for name, url in databases.items()
        }
        self.token = token or None
        self.poll_ms = max(200, int(sample_interval_s * 1000))
        self.history_s = history_s
        self.sessions = Sessions()

    # -- who is asking ----------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        if self.token is None:
            return None
        return self.sessions.get(request.cookies.get(COOKIE))

    async def checked_form(self, request: Request) -> FormData:
        """The form of a change, or 403: operator session, its CSRF token, our Origin."""
        session = self.session(request)
        form = await _form(request)
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.url.netloc}"
        if session is None:
            raise HTTPException(403, "log in as operator to change anything")
        if not hmac.compare_digest(str(form.get("csrf", "")), session.csrf):
            raise HTTPException(403, "missing or wrong CSRF token: reload the page")
        if origin is not None and origin != own:
            raise HTTPException(403, "a change must come from the console's own pages")
        return form

    def render(self, request: Request, title: str, body: str, *, status: int = 200) -> Response:
        session = self.session(request)
        html = pages.page(
            title,
            body,
            operator=session is not None,
            token_set=self.token is not None,
            csrf=session.csrf if session else None,
        )
        return HTMLResponse(html, status_code=status)

    def database(self, request: Request) -> ConsoleDatabase:
        db = self.databases.get(request.path_params["db"])
        if db is None:
            raise HTTPException(404, "no such database")
        return db

    # -- pages --------------------------------------------------------------------

    async def queues(self, request: Request) -> Response:
        body = pages.queues_body(
            list(self.databases), poll_ms=self.poll_ms, history_s=self.history_s
        )
        return self.render(request, "queues", body)

    async def api_queues(self, request: Request) -> Response:
        out = []
        for db in self.databases.values():
            latest = db.latest()
            rates = db.rates()
            queues = []
            for name, s in (latest.stats if latest else {}).items():
                series = rates.get(name, [])
                queues.append(
                    {
                        "queue": name,
                        "ready": s.ready,
                        "in_flight": s.in_flight,
                        "delayed": s.delayed,
                        "dead": s.dead,
                        "oldest_ready_age_s": s.oldest_ready_age_s,
                        "series": series,
                    }
                )
            out.append(
                {
                    "name": db.name,
                    "error": db.error,
                    "sampled_at": latest.at if latest else None,
                    "queues": queues,
                    "links": [dataclasses.asdict(link) for link in latest.links] if latest else [],
                }
            )
        return JSONResponse({"history_s": self.history_s, "databases": out})

    async def queue(self, request: Request) -> Response:
        db, queue = self.database(request), request.path_params["queue"]
        messages = await db.peek(queue, limit=50)
        latest = db.latest()
        stats = latest.stats.get(queue) if latest else None
        body = pages.queue_body(db.name, queue, stats, messages)
        return self.render(request, f"queue {queue}", body)

    async def message(self, request: Request) -> Response:
        db, queue = self.database(request), request.path_params["queue"]
        msg_id = request.path_params["msg_id"]
        found = await db.message(queue, msg_id)
        if found is None:
            raise HTTPException(404, f"message {msg_id} is no longer in {queue} or its archive")
        return self.render(
            request, f"message {msg_id} of {queue}", pages.message_body(db.name, queue, found)
        )

    async def dead(self, request: Request) -> Response:
        db, queue = self.database(request), request.path_params["queue"]
        letters = await db.dead_letters(queue, limit=DEAD_LETTERS_SHOWN)
        session = self.session(request)
        shown = DEAD_LETTERS_SHOWN
        more = f'<p class="meta">The oldest {shown}; retry all and purge all take every one.</p>'
        body = pages.message_note(request.query_params.get("note")) + pages.dead_body(
            db.name,
            queue,
            letters,
            operator=session is not None,
            csrf=session.csrf if session else None,
        )
        if len(letters) >= shown:
            body = more + body
        return self.render(request, f"dead letters of {queue}", body)

    async def dead_retry(self, request: Request) -> Response:
        db, queue = self.database(request), request.path_params["queue"]
        form = await self.checked_form(request)
        ids = _chosen_ids(form)
        count = await db.dead_letter_retry(queue, ids)
        note = f"requeued {count} dead letter{'' if count == 1 else 's'}"
        return _back_to_dead(db.name, queue, note)

    async def dead_purge(self, request: Request) -> Response:
        """Without `confirm` (the queue's name typed again): the confirmation page."""
        db, queue = self.database(request), request.path_params["queue"]
        form = await self.checked_form(request)
        ids = _chosen_ids(form)
        if form.get("confirm") != queue:
            letters = await db.dead_letters(queue, limit=10_000)
            chosen = {d.dead_letter_id for d in letters}
            count = len(chosen if ids is None else chosen & set(ids))
            session = self.session(request)
            assert session is not None  # checked_form refused otherwise
            body = pages.purge_confirm_body(db.name, queue, ids, count, session.csrf)
            return self.render(request, f"purge dead letters of {queue}?", body)
        count = await db.dead_letter_purge(queue, ids)
        return _back_to_dead(db.name, queue, f"deleted {count} dead letter(s) for good")

    async def correlation_search(self, request: Request) -> Response:
        cid = request.query_params.get("id", "").strip()
        if not cid:
            return RedirectResponse("/", status_code=303)
        return RedirectResponse(pages.correlation_url(cid), status_code=303)

    async def correlation(self, request: Request) -> Response:
        cid = request.path_params["correlation_id"]
        results = await asyncio.gather(
            *(db.correlation(cid) for db in self.databases.values()), return_exceptions=True
        )
        found, errors = [], []
        for db, result in zip(self.databases.values(), results, strict=True):
            if isinstance(result, BaseException):
                errors.append(f"database {db.name}: {result}")
            else:
                found += result
        found.sort(key=lambda f: (f.at, f.msg_id or 0))
        return self.render(
            request, f"correlation {cid}", pages.correlation_body(cid, found, errors)
        )

    # -- operator sessions ------------------------------------------------------------

    async def login_page(self, request: Request) -> Response:
        if self.token is None:
            return self.render(request, "log in", "<p>No operator token is configured.</p>")
        nxt = _local_path(request.query_params.get("next"))
        return self.render(request, "log in", pages.login_body(nxt, failed=False))

    async def login(self, request: Request) -> Response:
        form = await _form(request)
        nxt = _local_path(str(form.get("next", "/")))
        given = str(form.get("token", ""))
        if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            body = pages.login_body(nxt, failed=True)
            return self.render(request, "log in", body, status=403)
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(
            COOKIE, self.sessions.open(), httponly=True, samesite="strict", max_age=SESSION_TTL_S
        )
        return response

    async def logout(self, request: Request) -> Response:
        await self.checked_form(request)
        self.sessions.close(request.cookies.get(COOKIE))
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(COOKIE, httponly=True, samesite="strict")
        return response

    # -- the app ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        for db in self.databases.values():
            await db.open()
        tasks = [asyncio.create_task(db.sample_forever()) for db in self.databases.values()]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for db in self.databases.values():
                await db.close()

    def app(self) -> Starlette:
        queue = "/db/{db}/queue/{queue}"
        routes = [
            Route("/", self.queues),
            Route("/api/queues", self.api_queues),
            Route(queue, self.queue),
            Route(queue + "/message/{msg_id:int}", self.message),
            Route(queue + "/dead", self.dead),
            Route(queue + "/dead/retry", self.dead_retry, methods=["POST"]),
            Route(queue + "/dead/purge", self.dead_purge, methods=["POST"]),
            Route("/correlation", self.correlation_search),
            Route("/correlation/{correlation_id:path}", self.correlation),
            Route("/login", self.login_page),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
        return Starlette(
            routes=routes,
            middleware=[Middleware(BaseHTTPMiddleware, dispatch=_security_headers)],
            lifespan=self.lifespan,
            exception_handlers={
                HTTPException: self._error,
                QueueNotFoundError: self._not_found,
                InvalidNameError: self._not_found,
            },
        )

    async def _error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        body = f'<p class="error">{pages.e(exc.detail)}</p>'
        return self.render(request, f"{exc.status_code}", body, status=exc.status_code)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        body = f'<p class="error">{pages.e(exc)}</p>'
        return self.render(request, "not found", body, status=404)


def create_app(databases: Mapping[str, str], **options: Any) -> Starlette:
    """The console for these databases (name: conninfo); options as for Console."""
    return Console(databases, **options).app()


async def _security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _form(request: Request) -> FormData:
    """The urlencoded form every console page posts (parsed here: no multipart
    dependency for forms that never upload anything)."""
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise HTTPException(413, "form too large")
    if request.headers.get("content-type", "").split(";")[0].strip() not in (
        "application/x-www-form-urlencoded",
        "",
    ):
        raise HTTPException(415, "forms are posted urlencoded")
    pairs: list[tuple[str, str | UploadFile]] = list(
        parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    )
    return FormData(pairs)


def _chosen_ids(form: FormData) -> list[int] | None:
    """None: every dead letter of the queue (scope=all); else the ticked ids."""
    if form.get("scope") == "all":
        return None
    try:
        return [int(str(v)) for v in form.getlist("id")]
    except ValueError:
        raise HTTPException(400, "dead letter ids are whole numbers") from None


def _local_path(path: str | None) -> str:
    """Only a path of this console: never another site (an open redirect)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def _back_to_dead(db: str, queue: str, note: str) -> Response:
    url = pages.queue_url(db, queue, "dead") + "?note=" + pages.q(note)
    return RedirectResponse(url, status_code=303)
