"""The console's HTML, written here rather than with a template engine: a few small
pages, every value passed through html.escape. No inline script or style, so the
Content-Security-Policy can forbid them (console.py sets it)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import quote

from .admin import DeadLetter, PeekedMessage, QueueStats
from .console_data import Found, StoredMessage


def e(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return escape(value.isoformat(sep=" ", timespec="milliseconds"))
    if isinstance(value, float):
        return f"{value:.1f}"
    return escape(str(value))


def pretty(value: Any) -> str:
    return escape(json.dumps(value, indent=2, ensure_ascii=False, default=str))


def short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return escape(text if len(text) <= limit else text[: limit - 1] + "…")


def q(part: str) -> str:
    """A path segment (queue names are safe; correlation ids may hold anything)."""
    return quote(part, safe="")


def queue_url(db: str, queue: str, *rest: str) -> str:
    return "/".join(["", "db", q(db), "queue", q(queue), *rest])


def ident(value: object) -> str:
    """A long id shortened to its first characters, whole in the tooltip."""
    if not isinstance(value, str) or len(value) <= 13:
        return e(value)
    return f'<span class="ident" title="{e(value)}">{e(value[:8])}…</span>'


def correlation_url(correlation_id: str) -> str:
    return f"/correlation/{q(correlation_id)}"


def page(title: str, body: str, *, operator: bool, token_set: bool, csrf: str | None) -> str:
    if operator:
        who = (
            '<form method="post" action="/logout" class="inline">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}">'
            '<span class="badge op">operator</span> <button>log out</button></form>'
        )
    elif token_set:
        who = '<span class="badge">read-only</span> <a href="/login">operator login</a>'
    else:
        who = '<span class="badge">read-only (no operator token configured)</span>'
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)} · pgcourier console</title>
<link rel="stylesheet" href="/static/console.css">
<script src="/static/console.js" defer></script>
</head><body>
<header><a class="brand" href="/">pgcourier console</a>
<nav><a href="/">queues</a></nav>
<form class="search" method="get" action="/correlation">
<input name="id" placeholder="correlation id" aria-label="correlation id" id="correlation-search">
<button>follow</button></form>
<div class="who">{who}</div></header>
<main><h1>{e(title)}</h1>
{body}
</main></body></html>"""


def queues_body(databases: Sequence[str], *, poll_ms: int, history_s: float) -> str:
    names = ", ".join(f"<code>{e(db)}</code>" for db in databases)
    return f"""<div id="live" data-poll-ms="{poll_ms}" data-history-s="{history_s:g}">
<p class="meta">database{"s" if len(databases) > 1 else ""} {names} · updated
<span id="updated">never</span></p><div id="db-errors"></div>
<table class="queues"><thead><tr><th>database</th><th>queue</th><th>ready</th>
<th>in flight</th><th>delayed</th><th>dead</th><th>oldest ready</th>
<th>throughput, last {history_s / 60:g} min <span class="legend sent">sent</span>
<span class="legend left">done</span></th></tr></thead>
<tbody id="queue-rows"><tr><td colspan="8">loading…</td></tr></tbody></table>
<h2>links</h2>
<table class="links"><thead><tr><th>database</th><th>direction</th><th>node</th>
<th>mode</th><th>state</th><th>lag (bytes)</th><th>lag (s)</th><th>kept rows</th>
<th>last error</th></tr></thead>
<tbody id="link-rows"><tr><td colspan="9">loading…</td></tr></tbody></table></div>"""


def stats_line(s: QueueStats | None) -> str:
    if s is None:
        return ""
    return (
        f'<p class="meta">ready {s.ready} · in flight {s.in_flight} · delayed {s.delayed}'
        f" · dead {s.dead} · oldest ready {e(s.oldest_ready_age_s)} s</p>"
    )


def queue_body(db: str, queue: str, stats: QueueStats | None, messages: list[PeekedMessage]) -> str:
    rows = "".join(
        f'<tr><td><a href="{queue_url(db, queue, "message", str(m.msg_id))}">{m.msg_id}</a></td>'
        f"<td>{m.read_ct}</td><td>{e(m.enqueued_at)}</td><td>{e(m.visible_at)}</td>"
        f"<td>{e(m.type)}</td><td>{correlation_link(m.headers)}</td>"
        f"<td><code>{short(m.payload)}</code></td></tr>"
        for m in messages
    )
    table = (
        "<table><thead><tr><th>msg id</th><th>reads</th><th>enqueued</th><th>visible at</th>"
        f"<th>type</th><th>correlation</th><th>payload</th></tr></thead><tbody>{rows}</tbody></table>"
        if messages
        else "<p>The queue is empty.</p>"
    )
    dead = f'<p><a href="{queue_url(db, queue, "dead")}">dead letters</a></p>'
    title = (
        f"<h2>oldest messages{f' (the first {len(messages)})' if len(messages) >= 50 else ''}</h2>"
    )
    return stats_line(stats) + dead + title + table


def correlation_link(headers: dict[str, Any]) -> str:
    cid = headers.get("correlation_id")
    if not isinstance(cid, str):
        return "-"
    return f'<a class="cid" href="{correlation_url(cid)}">{e(cid)}</a>'


def message_body(db: str, queue: str, m: StoredMessage) -> str:
    fields = [
        ("database", e(db)),
        ("queue", f'<a href="{queue_url(db, queue)}">{e(queue)}</a>'),
        ("where", e(m.place)),
        ("msg id", e(m.msg_id)),
        ("reads", e(m.read_ct)),
        ("enqueued", e(m.enqueued_at)),
        ("visible at", e(m.visible_at)),
        ("archived", e(m.archived_at)),
        ("sender", e(m.sender)),
        ("type", e(m.headers.get("type"))),
        ("correlation", correlation_link(m.headers)),
    ]
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in fields)
    return (
        f'<dl class="fields">{dl}</dl><h2>headers</h2><pre id="headers">{pretty(m.headers)}</pre>'
        f'<h2>payload</h2><pre id="payload">{pretty(m.payload)}</pre>'
    )


def errors_list(letter: DeadLetter) -> str:
    items = "".join(
        f'<li><span class="attempt">attempt {e(err.get("attempt"))}</span> '
        f'<span class="at">{e(err.get("at"))}</span> <code>{e(err.get("error"))}</code></li>'
        if isinstance(err, dict)
        else f"<li><code>{e(err)}</code></li>"
        for err in letter.errors
    )
    return f'<ol class="errors">{items}</ol>'


def dead_body(
    db: str, queue: str, letters: list[DeadLetter], *, operator: bool, csrf: str | None
) -> str:
    if not letters:
        return f'<p>No dead letters. <a href="{queue_url(db, queue)}">back to the queue</a></p>'
    rows = "".join(
        "<tr>"
        + (
            f'<td><input type="checkbox" name="id" value="{d.dead_letter_id}" '
            f'form="dead-actions" aria-label="select {d.dead_letter_id}"></td>'
            if operator
            else ""
        )
        + f'<td class="dl-id">{d.dead_letter_id}</td><td>{d.msg_id}</td><td>{e(d.type)}</td>'
        f"<td>{d.attempts}</td><td>{e(d.dead_at)}</td><td>{correlation_link(d.headers)}</td>"
        f"<td>{errors_list(d)}<details><summary>payload</summary>"
        f"<pre>{pretty(d.payload)}</pre></details></td></tr>"
        for d in letters
    )
    head = "<th></th>" if operator else ""
    table = (
        f'<table class="dead"><thead><tr>{head}<th>id</th><th>msg id</th><th>type</th>'
        "<th>attempts</th><th>dead at</th><th>correlation</th><th>every attempt's error</th>"
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )
    if not operator:
        return '<p class="meta">Read-only: log in as operator to retry or purge.</p>' + table
    purge = queue_url(db, queue, "dead", "purge")
    actions = (
        f'<form id="dead-actions" method="post" action="{queue_url(db, queue, "dead", "retry")}">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">'
        '<button id="retry-selected" name="scope" value="selected">retry selected</button> '
        '<button id="retry-all" name="scope" value="all">retry all</button> '
        '<button id="purge-selected" name="scope" value="selected" '
        f'formaction="{purge}">purge selected…</button> '
        f'<button id="purge-all" name="scope" value="all" formaction="{purge}">purge all…</button>'
        "</form>"
    )
    return actions + table


def purge_confirm_body(db: str, queue: str, ids: list[int] | None, count: int, csrf: str) -> str:
    which = "all" if ids is None else ", ".join(str(i) for i in ids)
    hidden = "".join(f'<input type="hidden" name="id" value="{i}">' for i in ids or [])
    return (
        f'<p class="warn">This deletes {count} dead letter{"" if count == 1 else "s"} of '
        f"<code>{e(queue)}</code> for good (ids: {e(which)}). They cannot be retried "
        "afterwards.</p>"
        f'<form method="post" action="{queue_url(db, queue, "dead", "purge")}">'
        f'<input type="hidden" name="csrf" value="{e(csrf)}">{hidden}'
        f'<input type="hidden" name="scope" value="{"all" if ids is None else "selected"}">'
        f'<label>type the queue name to confirm: <input name="confirm" id="confirm" '
        f'autocomplete="off"></label> <button id="purge-confirm">delete for good</button>'
        f' <a href="{queue_url(db, queue, "dead")}">cancel</a></form>'
    )


def correlation_body(correlation_id: str, found: Iterable[Found], errors: list[str]) -> str:
    rows = []
    for f in found:
        if f.place == "inbox":
            what = f"handled by <code>{e(f.queue)}</code>"
            link = e(f.queue)
        elif f.place in ("queue", "archive"):
            what = f"<code>{short(f.payload, 60)}</code>"
            href = queue_url(f.database, f.queue, "message", str(f.msg_id))
            link = f'<a href="{href}">{e(f.queue)}</a>'
        elif f.place == "dead letter":
            what = f'<code>{short(f.payload, 60)}</code><br><code class="error">{e(f.error)}</code>'
            link = f'<a href="{queue_url(f.database, f.queue, "dead")}">{e(f.queue)}</a>'
        else:
            what = f"<code>{short(f.payload, 60)}</code>"
            link = e(f.queue)
        rows.append(
            f'<tr class="place-{e(f.place.replace(" ", "-"))}"><td>{e(f.at)}</td>'
            f"<td>{e(f.database)}</td><td>{link}</td><td>{e(f.place)}</td>"
            f"<td>{e(f.msg_id)}</td><td>{e(f.type)}</td>"
            f"<td>{e(f.headers.get('message_id'))}</td><td>{e(f.headers.get('causation_id'))}</td>"
            f"<td>{what}</td></tr>"
        )
    problems = "".join(f'<p class="error">{e(m)}</p>' for m in errors)
    if not rows:
        nothing = f"<p>Nothing carries the correlation id <code>{e(correlation_id)}</code>.</p>"
        return problems + nothing
    return (
        problems + f'<p class="meta">{len(rows)} traces, oldest first.</p>'
        '<table class="correlation"><thead><tr><th>at</th><th>database</th><th>queue</th>'
        "<th>where</th><th>msg id</th><th>type</th><th>message id</th><th>caused by</th>"
        f"<th>payload</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def login_body(next_path: str, *, failed: bool) -> str:
    note = '<p class="error">Wrong token.</p>' if failed else ""
    return (
        note + '<form method="post" action="/login">'
        f'<input type="hidden" name="next" value="{e(next_path)}">'
        '<label>operator token <input type="password" name="token" id="token" '
        'autocomplete="current-password"></label> <button id="login">log in</button></form>'
    )


def message_note(text: str | None) -> str:
    return f'<p class="note" id="note">{e(text)}</p>' if text else ""
