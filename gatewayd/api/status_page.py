# -*- test-case-name: tests.integration.test_status_page -*-
"""
The status page at C{/}: one self-contained HTML document (inline CSS and
JS, nothing fetched from elsewhere) that polls C{/v1/status} every second
and shows servers, blocks and their pools, connected clients, plugins and
live rates computed in the browser from the byte counters.

The page holds no data itself, so it is served without a token; its script
sends the token from the URL fragment (C{/#token=...}, never sent to the
server nor logged) or from a form, kept in C{sessionStorage}.  A strict
Content-Security-Policy allows exactly the inline script and style below
(by hash) and requests to this origin only.
"""

from __future__ import annotations

import base64
import hashlib

_STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --warn: #9a6700;
        --muted: #6e7781; --line: #d0d7de; --head: #f6f8fa; }
@media (prefers-color-scheme: dark) {
  :root { --line: #30363d; --head: #161b22; --muted: #8b949e; --ok: #3fb950;
          --bad: #f85149; --warn: #d29922; } }
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5rem; }
header { display: flex; gap: 1rem; align-items: baseline; flex-wrap: wrap; }
h1 { font-size: 1.4rem; margin: 0; }
h2 { font-size: 1.05rem; margin: 1.6rem 0 .5rem; }
.badge { font-weight: 600; padding: .1rem .5rem; border-radius: 1rem; border: 1px solid; }
.ok { color: var(--ok); } .bad { color: var(--bad); } .warn { color: var(--warn); }
.muted { color: var(--muted); }
.cards { display: flex; gap: .8rem; flex-wrap: wrap; margin-top: 1rem; }
.card { border: 1px solid var(--line); border-radius: .4rem; padding: .5rem .9rem; min-width: 9rem; }
.card b { display: block; font-size: 1.3rem; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .6rem; text-align: left;
         font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: var(--head); font-weight: 600; }
td.num, th.num { text-align: right; }
#login { display: none; margin-top: 1rem; }
#error { margin-top: 1rem; }
"""

_SCRIPT = """
"use strict";
const POLL_MS = 1000;
const $ = (id) => document.getElementById(id);
let previous = null;

function token() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("gatewayd-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("gatewayd-token");
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + units[i];
}

function rate(now, before, seconds) {
  if (before === undefined || seconds <= 0) return "\\u2013";
  return bytes(Math.max(0, now - before) / seconds) + "/s";
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(id, items, render, empty) {
  const body = $(id);
  body.replaceChildren();
  if (!items.length) {
    const row = body.insertRow();
    const td = cell(row, empty, "muted");
    td.colSpan = body.parentElement.tHead.rows[0].cells.length;
    return;
  }
  for (const item of items) render(body.insertRow(), item);
}

function show(s) {
  const seconds = previous ? s.time - previous.time : 0;
  const before = previous ? previous.blocks : {};
  const blocks = {};
  $("version").textContent = "v" + s.version;
  const badge = $("health");
  badge.textContent = s.status;
  badge.className = "badge " + (s.status === "SERVING" ? "ok" : "bad");
  $("updated").textContent = "updated " + new Date().toLocaleTimeString();
  $("clients-total").textContent = s.totals.clients;
  const prevTotals = previous ? previous.totals : {};
  $("rate-in").textContent = rate(s.totals.bytesFromClient, prevTotals.bytesFromClient, seconds);
  $("rate-out").textContent = rate(s.totals.bytesToClient, prevTotals.bytesToClient, seconds);
  $("rate-server").textContent = rate(s.totals.bytesFromServer, prevTotals.bytesFromServer, seconds);
  fill("servers", s.servers, (row, g) => {
    row.dataset.group = g.group;
    cell(row, g.group); cell(row, g.network + " " + g.address);
    cell(row, g.listening ? "listening" : "stopped", g.listening ? "ok" : "bad");
    cell(row, g.tls ? "yes" : "no"); cell(row, g.strategy);
    cell(row, g.clients, "num"); cell(row, g.rejected, "num");
  }, "no servers");
  const rows = [];
  for (const g of s.servers) for (const b of g.blocks) rows.push([g.group, b]);
  fill("blocks", rows, (row, [group, b]) => {
    const key = group + "/" + b.name;
    blocks[key] = b.bytes;
    const was = before[key] || {};
    row.dataset.block = key;
    cell(row, key); cell(row, b.backend);
    cell(row, b.pool.state, b.pool.state === "healthy" ? "ok" : b.pool.state === "starting" ? "warn" : "bad");
    cell(row, b.pool.size, "num"); cell(row, b.pool.available, "num");
    cell(row, b.pool.busy, "num"); cell(row, b.pool.waiting, "num"); cell(row, b.clients, "num");
    cell(row, rate(b.bytes.bytesFromClient, was.bytesFromClient, seconds), "num");
    cell(row, rate(b.bytes.bytesToClient, was.bytesToClient, seconds), "num");
    cell(row, b.pool.lastError, "muted");
  }, "no blocks");
  fill("clients", s.clients.shown, (row, c) => {
    row.className = "client";
    cell(row, c.remote, "remote"); cell(row, c.group + "/" + (c.block || "\\u2013"));
    cell(row, c.state); cell(row, c.tls ? "yes" : "no"); cell(row, c.local, "muted");
  }, "no connected clients");
  $("clients-more").textContent = s.clients.truncated
    ? "showing " + s.clients.shown.length + " of " + s.clients.total : "";
  fill("plugins", s.plugins, (row, p) => {
    row.dataset.plugin = p.name;
    cell(row, p.name); cell(row, p.version); cell(row, p.priority, "num"); cell(row, p.kind);
    cell(row, p.pid); cell(row, p.health, p.health === "serving" ? "ok" : "bad");
    cell(row, p.hooks.join(", "), "muted");
  }, "no plugins");
  previous = {time: s.time, totals: s.totals, blocks: blocks};
}

async function poll() {
  const headers = {"Accept": "application/json"};
  const t = token();
  if (t) headers["Authorization"] = "Bearer " + t;
  try {
    const answer = await fetch("v1/status", {headers, cache: "no-store"});
    if (answer.status === 401) {
      $("login").style.display = "block";
      $("error").textContent = t ? "the token was refused" : "this gateway needs a token";
    } else if (!answer.ok) {
      $("error").textContent = "status request failed: HTTP " + answer.status;
    } else {
      $("login").style.display = "none";
      $("error").textContent = "";
      show(await answer.json());
    }
  } catch (e) {
    $("error").textContent = "gateway unreachable: " + e.message;
    const badge = $("health");
    badge.textContent = "UNREACHABLE"; badge.className = "badge bad";
  }
  setTimeout(poll, POLL_MS);
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("gatewayd-token", $("token").value);
  $("token").value = "";
});
poll();
"""

_BODY = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>gatewayd status</title>
<link rel="icon" href="data:,">
<style>{style}</style>
</head>
<body>
<header>
  <h1>gatewayd</h1><span id="version" class="muted"></span>
  <span id="health" class="badge">loading</span><span id="updated" class="muted"></span>
</header>
<form id="login"><label>API token <input id="token" type="password" autocomplete="off"></label>
  <button type="submit">Use</button></form>
<div id="error" class="bad" role="alert"></div>
<div class="cards">
  <div class="card">clients<b id="clients-total">&ndash;</b></div>
  <div class="card">from clients<b id="rate-in">&ndash;</b></div>
  <div class="card">to clients<b id="rate-out">&ndash;</b></div>
  <div class="card">from servers<b id="rate-server">&ndash;</b></div>
</div>
<h2>Servers</h2>
<table><thead><tr><th>group</th><th>listen</th><th>state</th><th>TLS</th><th>balancer</th>
  <th class="num">clients</th><th class="num">refused</th></tr></thead>
  <tbody id="servers"></tbody></table>
<h2>Blocks and pools</h2>
<table><thead><tr><th>block</th><th>backend</th><th>state</th><th class="num">size</th>
  <th class="num">available</th><th class="num">busy</th><th class="num">waiting</th>
  <th class="num">clients</th><th class="num">from clients</th><th class="num">to clients</th>
  <th>last error</th></tr></thead>
  <tbody id="blocks"></tbody></table>
<h2>Clients <span id="clients-more" class="muted"></span></h2>
<table><thead><tr><th>client</th><th>block</th><th>state</th><th>TLS</th><th>via</th></tr></thead>
  <tbody id="clients"></tbody></table>
<h2>Plugins</h2>
<table><thead><tr><th>plugin</th><th>version</th><th class="num">priority</th><th>kind</th>
  <th>pid</th><th>health</th><th>hooks</th></tr></thead>
  <tbody id="plugins"></tbody></table>
<script>{script}</script>
</body>
</html>
"""


def _digest(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"


#: The page, encoded once.
PAGE: bytes = _BODY.format(style=_STYLE, script=_SCRIPT).encode("utf-8")

SECURITY_HEADERS: dict[str, str] = {
    "content-security-policy": (
        f"default-src 'none'; script-src {_digest(_SCRIPT)}; style-src {_digest(_STYLE)}; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"),
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}
