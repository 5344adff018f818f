// pgcourier console: polls /api/queues and redraws the queues tables and their
// throughput charts (inline SVG). No framework, nothing fetched from elsewhere.
"use strict";

(function () {
  const live = document.getElementById("live");
  if (!live) return;
  const pollMs = Number(live.dataset.pollMs) || 2000;
  const historyS = Number(live.dataset.historyS) || 300;
  const SVG = "http://www.w3.org/2000/svg";
  const W = 180, H = 34;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function path(...parts) {
    return "/" + parts.map(encodeURIComponent).join("/");
  }

  function chart(series, now) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "chart");
    svg.setAttribute("width", W);
    svg.setAttribute("height", H);
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    let top = 1;
    for (const [, sent, left] of series) top = Math.max(top, sent, left);
    for (const [index, cls] of [[1, "sent"], [2, "left"]]) {
      const points = series.map((p) => {
        const x = W - ((now - p[0]) / historyS) * W;
        const y = H - 2 - (p[index] / top) * (H - 4);
        return `${Math.max(0, x).toFixed(1)},${y.toFixed(1)}`;
      });
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("class", cls);
      line.setAttribute("points", points.join(" "));
      svg.appendChild(line);
    }
    const title = document.createElementNS(SVG, "title");
    title.textContent = `peak ${top.toFixed(1)} messages/s`;
    svg.appendChild(title);
    return svg;
  }

  function rate(series, index) {
    // The last 10 seconds or so: one sample alone is jumpy.
    const recent = series.slice(-5);
    if (!recent.length) return 0;
    return recent.reduce((sum, p) => sum + p[index], 0) / recent.length;
  }

  function row(db, q, now) {
    const tr = el("tr", { "data-db": db, "data-queue": q.queue });
    tr.appendChild(el("td", { class: "db" }, db));
    const name = el("td");
    name.appendChild(el("a", { href: path("db", db, "queue", q.queue) }, q.queue));
    tr.appendChild(name);
    for (const key of ["ready", "in_flight", "delayed"]) {
      tr.appendChild(el("td", { class: "num " + key }, String(q[key])));
    }
    const dead = el("td", { class: "num dead" + (q.dead ? " dead-some" : "") });
    dead.appendChild(el("a", { href: path("db", db, "queue", q.queue, "dead") }, String(q.dead)));
    tr.appendChild(dead);
    const age = q.oldest_ready_age_s;
    tr.appendChild(el("td", { class: "num age" }, age == null ? "-" : age.toFixed(1) + " s"));
    const td = el("td", { class: "chart" });
    td.appendChild(chart(q.series, now));
    td.appendChild(el("span", { class: "rate" },
      `${rate(q.series, 1).toFixed(1)}/s in · ${rate(q.series, 2).toFixed(1)}/s done`));
    tr.appendChild(td);
    return tr;
  }

  function linkRow(db, link) {
    const tr = el("tr", { class: link.state === "streaming" || link.state === "relay" ? "" : "error" });
    const lagS = link.lag_s === null ? "-" : link.lag_s.toFixed(1);
    for (const text of [db, link.direction, link.node, link.mode, link.state,
                        link.lag_bytes === null ? "-" : String(link.lag_bytes), lagS,
                        link.retained === null ? "-" : String(link.retained),
                        link.last_error || ""]) {
      tr.appendChild(el("td", {}, text));
    }
    return tr;
  }

  async function refresh() {
    try {
      const response = await fetch("/api/queues", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const data = await response.json();
      const rows = [];
      const problems = [];
      const linkRows = [];
      for (const db of data.databases) {
        if (db.error) problems.push(el("p", { class: "error" }, `${db.name}: unreachable: ${db.error}`));
        const now = db.sampled_at || Date.now() / 1000;
        for (const q of db.queues) rows.push(row(db.name, q, now));
        for (const link of db.links || []) linkRows.push(linkRow(db.name, link));
      }
      if (!linkRows.length) {
        const none = el("tr");
        none.appendChild(el("td", { colspan: "9" }, "no links"));
        linkRows.push(none);
      }
      document.getElementById("link-rows").replaceChildren(...linkRows);
      if (!rows.length) {
        const empty = el("tr");
        empty.appendChild(el("td", { colspan: "8" }, "no queues yet"));
        rows.push(empty);
      }
      document.getElementById("queue-rows").replaceChildren(...rows);
      document.getElementById("db-errors").replaceChildren(...problems);
      document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    } catch (error) {
      document.getElementById("updated").textContent = `failed (${error.message}), retrying`;
    }
    setTimeout(refresh, pollMs);
  }
  refresh();
})();
