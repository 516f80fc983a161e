/// The status page's templates (mustache, HTML-escaped unless in triple braces), stylesheet
/// and script. They are compiled into the agent, so the page works offline and from a
/// package with nothing else installed.
enum WebTemplates {
    static let page = #"""
{{% CONTENT_TYPE: RELAY_HTML }}<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>{{title}} · borg-relay</title>
<link rel="stylesheet" href="/static/app.css">
<script src="/static/app.js" defer></script>
</head>
<body>
<header class="top">
<a class="brand" href="/">borg-relay</a>
<span class="relay">{{relay}}</span>
{{#user}}<form class="logout" method="post" action="/logout"><input type="hidden" name="csrf" value="{{csrf}}"><span class="user">{{user}}</span> <button type="submit">Log out</button></form>{{/user}}
</header>
<main id="main" data-refresh="{{refresh}}">
{{#message}}
<section class="message {{cssClass}}" role="alert"><h1>{{heading}}</h1><p>{{text}}</p>{{#back}}<p><a href="{{back}}">Back</a></p>{{/back}}</section>
{{/message}}
{{#login}}
<section class="login">
<h1>Log in</h1>
{{#error}}<p class="error" role="alert">{{error}}</p>{{/error}}
{{#noPassword}}<p class="error">No password is set for this page. On the relay, as root or the agent's user: <code>relayctl web passwd</code></p>{{/noPassword}}
<form method="post" action="/login">
<input type="hidden" name="next" value="{{next}}">
<label for="password">Password</label>
<input type="password" id="password" name="password" autocomplete="current-password" required autofocus>
<button type="submit">Log in</button>
</form>
</section>
{{/login}}
{{#fleet}}
<h1>Fleet</h1>
<p class="summary"><span>{{clientCount}} clients</span>{{#counts}} <span class="count {{cssClass}}">{{count}} {{label}}</span>{{/counts}}
<span class="agent">{{running}} running, {{queued}} waiting (at most {{maxParallel}} at once)</span>
<span class="generated">as of <time datetime="{{generated.iso}}">{{generated.absolute}}</time></span></p>
<table class="fleet">
<caption>Clients, the ones that need attention first</caption>
<thead><tr><th scope="col">Client</th><th scope="col">State</th><th scope="col">Last success</th><th scope="col">Last 30 days</th><th scope="col">Last archive</th><th scope="col">Next run</th><th scope="col">Last check</th></tr></thead>
<tbody>
{{#rows}}
<tr class="client" data-client="{{name}}" data-state="{{healthClass}}">
<th scope="row" data-label="Client"><a href="/clients/{{name}}">{{name}}</a></th>
<td data-label="State"><span class="state {{healthClass}}">{{health}}</span>{{#current}}<br><a class="current" href="/runs/{{currentRun}}">{{current}}</a>{{/current}}{{#lastError}}<br><a class="error" href="/runs/{{lastRun}}">{{lastError}}</a>{{/lastError}}</td>
<td data-label="Last success">{{#lastSuccess}}<time datetime="{{iso}}" title="{{absolute}}">{{relative}}</time>{{/lastSuccess}}{{^lastSuccess}}never{{/lastSuccess}}</td>
<td data-label="Last 30 days"><ol class="strip" aria-label="{{stripSummary}}">{{{stripHTML}}}</ol></td>
<td data-label="Last archive">{{#lastArchive}}<span class="archive">{{lastArchive}}</span><br>{{lastOriginal}} original, {{lastDeduplicated}} new{{/lastArchive}}{{^lastArchive}}–{{/lastArchive}}</td>
<td data-label="Next run">{{#nextRun}}<time datetime="{{iso}}" title="{{absolute}}">{{relative}}</time>{{/nextRun}}{{^nextRun}}{{#schedule}}{{schedule}}{{/schedule}}{{^schedule}}not scheduled{{/schedule}}{{/nextRun}}</td>
<td data-label="Last check">{{#lastCheck}}<span class="state {{lastCheckClass}}">{{lastCheck}}</span>{{/lastCheck}}{{^lastCheck}}–{{/lastCheck}}</td>
</tr>
{{/rows}}
</tbody>
</table>
{{/fleet}}
{{#client}}
{{#row}}
<h1>{{name}} <span class="state {{healthClass}}">{{health}}</span></h1>
<dl class="facts">
<dt>Server</dt><dd>{{server}}</dd>
<dt>Last success</dt><dd>{{#lastSuccess}}<time datetime="{{iso}}" title="{{absolute}}">{{relative}}</time>{{/lastSuccess}}{{^lastSuccess}}never{{/lastSuccess}}</dd>
<dt>Next run</dt><dd>{{#nextRun}}<time datetime="{{iso}}" title="{{absolute}}">{{relative}}</time>{{/nextRun}}{{^nextRun}}not scheduled{{/nextRun}}</dd>
<dt>Last check</dt><dd>{{#lastCheck}}<span class="state {{lastCheckClass}}">{{lastCheck}}</span>{{/lastCheck}}{{^lastCheck}}–{{/lastCheck}}</dd>
{{#current}}<dt>Now</dt><dd><a href="/runs/{{currentRun}}">{{current}}</a></dd>{{/current}}
</dl>
<ol class="strip wide" aria-label="{{stripSummary}}">{{#strip}}<li class="day {{mark}}" title="{{label}}"></li>{{/strip}}</ol>
{{#canAct}}
<form class="action" method="post" action="/clients/{{name}}/run"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit">Run a backup now</button></form>
{{/canAct}}
{{/row}}
<section class="charts">
{{#charts}}
<figure class="chart" id="{{id}}-figure">
<figcaption>{{title}}</figcaption>
{{{svg}}}
<details><summary>The figures</summary>
<table><thead><tr><th scope="col">Backup started</th><th scope="col">Value</th></tr></thead>
<tbody>{{#rows}}<tr><td>{{label}}</td><td>{{value}}</td></tr>{{/rows}}</tbody></table>
</details>
</figure>
{{/charts}}
</section>
<h2>Runs</h2>
<table class="runs">
<thead><tr><th scope="col">Run</th><th scope="col">Kind</th><th scope="col">State</th><th scope="col">Started</th><th scope="col">Took</th><th scope="col">Sent</th><th scope="col">Archive or error</th></tr></thead>
<tbody>
{{#runs}}<tr data-run="{{id}}" data-state="{{stateClass}}"><td data-label="Run"><a href="/runs/{{id}}">{{id}}</a></td><td data-label="Kind">{{kind}}</td><td data-label="State"><span class="state {{stateClass}}">{{state}}</span></td><td data-label="Started"><time datetime="{{started.iso}}" title="{{started.absolute}}">{{started.relative}}</time></td><td data-label="Took">{{duration}}</td><td data-label="Sent">{{sent}}</td><td data-label="Archive or error">{{#archive}}<span class="archive">{{archive}}</span>{{/archive}}{{#error}}<span class="error">{{error}}</span>{{/error}}</td></tr>
{{/runs}}
{{^runs}}<tr><td colspan="7">No run yet.</td></tr>{{/runs}}
</tbody>
</table>
<h2>Archives</h2>
<p class="note">The archives this relay created, as its history records them (a tamper check compares them with the repository; <code>relayctl list {{row.name}}</code> asks the repository itself).</p>
<table class="archives">
<thead><tr><th scope="col">Archive</th><th scope="col">Created</th><th scope="col">By run</th></tr></thead>
<tbody>
{{#archives}}<tr class="archive-row"><td data-label="Archive"><span class="archive">{{name}}</span></td><td data-label="Created"><time datetime="{{created.iso}}" title="{{created.absolute}}">{{created.relative}}</time></td><td data-label="By run"><a href="/runs/{{run}}">{{run}}</a></td></tr>
{{/archives}}
{{^archives}}<tr><td colspan="3">None yet.</td></tr>{{/archives}}
</tbody>
</table>
{{#hasPruned}}
<details><summary>Pruned by retention</summary>
<table class="archives pruned"><thead><tr><th scope="col">Archive</th><th scope="col">Created</th><th scope="col">Pruned</th></tr></thead><tbody>
{{#pruned}}<tr><td><span class="archive">{{name}}</span></td><td><time datetime="{{created.iso}}">{{created.absolute}}</time></td><td>{{#pruned}}<time datetime="{{iso}}">{{absolute}}</time>{{/pruned}}</td></tr>{{/pruned}}
</tbody></table></details>
{{/hasPruned}}
{{/client}}
{{#run}}
<h1>Run {{id}} <span class="state {{stateClass}}" id="run-state">{{state}}</span></h1>
<p><a href="/clients/{{client}}">{{client}}</a> → {{server}}, {{kind}}{{#trigger}}, started by {{trigger}}{{/trigger}}</p>
<dl class="facts">
<dt>Started</dt><dd><time datetime="{{started.iso}}" title="{{started.absolute}}">{{started.absolute}}</time></dd>
{{#ended}}<dt>Ended</dt><dd><time datetime="{{iso}}" title="{{absolute}}">{{absolute}}</time></dd>{{/ended}}
<dt>Took</dt><dd>{{duration}}</dd>
<dt>Sent to the server</dt><dd>{{sent}}</dd>
<dt>Received from it</dt><dd>{{received}}</dd>
{{#archive}}<dt>Archive</dt><dd class="archive">{{archive}}</dd>{{/archive}}
{{#files}}<dt>Files</dt><dd>{{files}}</dd>{{/files}}
{{#original}}<dt>Original size</dt><dd>{{original}}</dd><dt>Compressed</dt><dd>{{compressed}}</dd><dt>Deduplicated (new)</dt><dd>{{deduplicated}}</dd>{{/original}}
{{#borgExit}}<dt>borg's exit status</dt><dd>{{borgExit}}</dd>{{/borgExit}}
</dl>
{{#running}}
<section class="progress" id="progress" data-events="/runs/{{id}}/events" aria-live="polite">
<h2>Progress</h2>
<dl class="facts">
<dt>Phase</dt><dd data-field="phase">{{progress.phase}}</dd>
<dt>Sent</dt><dd data-field="sent">{{progress.sent}}</dd>
<dt>Rate</dt><dd data-field="rate">{{progress.rate}}</dd>
<dt>Files</dt><dd data-field="files">{{progress.files}}</dd>
<dt>Current file</dt><dd data-field="path" class="path">{{progress.currentPath}}</dd>
</dl>
</section>
{{#canAct}}
<form class="action" method="post" action="/runs/{{id}}/cancel"><input type="hidden" name="csrf" value="{{csrf}}"><button type="submit" class="danger">Cancel this run</button></form>
{{/canAct}}
{{/running}}
{{#error}}<section class="message failed" role="alert"><h2>What went wrong</h2><pre class="error">{{error}}</pre></section>{{/error}}
{{#hasAttempts}}
<h2>Attempts before the last</h2>
<table class="attempts"><thead><tr><th scope="col">Attempt</th><th scope="col">Started</th><th scope="col">Error</th><th scope="col">Waited</th></tr></thead><tbody>
{{#attempts}}<tr><td>{{number}}</td><td><time datetime="{{started.iso}}">{{started.absolute}}</time></td><td class="error">{{error}}</td><td>{{retryAfter}}</td></tr>{{/attempts}}
</tbody></table>
{{/hasAttempts}}
<h2>Log</h2>
{{#logSkipped}}<p class="note">The first {{logSkipped}} of the log are not shown (<code>relayctl log {{id}}</code> prints it all).</p>{{/logSkipped}}
<pre class="log" id="log">{{log}}</pre>
{{/run}}
</main>
<footer><a href="/">Fleet</a> · times in your browser's time zone · borg-relay {{version}}</footer>
</body>
</html>
"""#

    static let css = #"""
:root { --bg: #fbfbfa; --fg: #1d1f21; --muted: #5f6368; --line: #d9dcdf; --card: #ffffff;
  --ok: #1e7d32; --warn: #9a6700; --bad: #c62828; --late: #b45309; --run: #1a5fb4; --none: #e3e5e8; --link: #1a5fb4; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #15171a; --fg: #e6e6e6; --muted: #a0a4a8; --line: #33373c; --card: #1d2024;
    --ok: #57bb6a; --warn: #e3b341; --bad: #f26d6d; --late: #f0a35e; --run: #6ea8fe; --none: #2c3035; --link: #8ab4f8; }
}
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; background: var(--bg); color: var(--fg); }
a { color: var(--link); }
header.top { display: flex; gap: 1em; align-items: center; padding: .6em 1.2em; border-bottom: 1px solid var(--line); background: var(--card); }
header .brand { font-weight: 700; text-decoration: none; color: var(--fg); }
header .relay { color: var(--muted); }
header form.logout { margin-left: auto; }
main { padding: 1em 1.2em; max-width: 1400px; }
footer { padding: 1em 1.2em; color: var(--muted); font-size: .85em; }
h1 { font-size: 1.4em; margin: .2em 0 .5em; }
h2 { font-size: 1.1em; margin: 1.4em 0 .5em; }
table { border-collapse: collapse; width: 100%; background: var(--card); }
caption { text-align: left; color: var(--muted); padding: .3em 0; }
th, td { text-align: left; padding: .45em .6em; border-bottom: 1px solid var(--line); vertical-align: top; }
thead th { font-size: .85em; color: var(--muted); font-weight: 600; }
.summary span { margin-right: .8em; }
.summary .agent, .summary .generated, .note { color: var(--muted); }
.state { display: inline-block; padding: 0 .5em; border-radius: 1em; font-size: .85em; font-weight: 600; border: 1px solid currentColor; white-space: nowrap; }
.ok { color: var(--ok); } .warning { color: var(--warn); } .failed, .tamper, .checkfailed { color: var(--bad); }
.overdue { color: var(--late); } .running, .queued { color: var(--run); } .skipped, .cancelled, .new { color: var(--muted); }
.count { font-weight: 600; }
a.error, span.error, pre.error, p.error, td.error { color: var(--bad); }
.archive { font-family: ui-monospace, monospace; font-size: .9em; word-break: break-all; }
ol.strip { display: flex; gap: 2px; list-style: none; margin: 0; padding: 0; }
ol.strip li.day { width: 7px; height: 18px; border-radius: 2px; background: var(--none); }
ol.strip.wide li.day { width: 14px; height: 24px; }
ol.strip li.day.success { background: var(--ok); } ol.strip li.day.warning { background: var(--warn); }
ol.strip li.day.failure { background: var(--bad); } ol.strip li.day.overdue { background: var(--late); opacity: .7; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; margin: .5em 0 1em; }
dl.facts dt { color: var(--muted); } dl.facts dd { margin: 0; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 1em; }
figure.chart { margin: 0; padding: .6em; background: var(--card); border: 1px solid var(--line); border-radius: 6px; }
figure.chart figcaption { font-weight: 600; margin-bottom: .3em; }
svg.chart { width: 100%; height: auto; display: block; }
svg.chart rect.bar { fill: var(--ok); } svg.chart rect.failed { fill: var(--bad); } svg.chart rect.warning { fill: var(--warn); }
svg.chart rect.cancelled, svg.chart rect.skipped { fill: var(--muted); }
svg.chart .axis, svg.chart .empty { fill: var(--muted); font-size: 11px; } svg.chart .grid { stroke: var(--line); }
pre.log { background: var(--card); border: 1px solid var(--line); padding: .8em; overflow: auto; max-height: 70vh; font-size: .85em; white-space: pre-wrap; word-break: break-all; }
.path { font-family: ui-monospace, monospace; word-break: break-all; }
pre.error { white-space: pre-wrap; word-break: break-word; margin: .5em 0 1em; }
section.message { border: 1px solid currentColor; border-radius: 6px; padding: .4em 1em; margin: 1em 0; background: var(--card); }
section.login { max-width: 24em; margin: 3em auto; padding: 1.5em; background: var(--card); border: 1px solid var(--line); border-radius: 8px; }
section.login label { display: block; margin-bottom: .3em; }
input[type=password] { width: 100%; padding: .5em; font-size: 1em; margin-bottom: .8em; background: var(--bg); color: var(--fg); border: 1px solid var(--line); border-radius: 4px; }
button { font: inherit; padding: .35em .9em; border-radius: 4px; border: 1px solid var(--line); background: var(--card); color: var(--fg); cursor: pointer; }
button.danger { color: var(--bad); border-color: var(--bad); }
form.action { margin: .8em 0; }
code { font-family: ui-monospace, monospace; }
@media (max-width: 700px) {
  main { padding: .6em; }
  table.fleet thead, table.runs thead, table.archives thead { display: none; }
  table.fleet tr, table.runs tr, table.archives tr { display: block; border-bottom: 2px solid var(--line); padding: .4em 0; }
  table.fleet td, table.fleet th, table.runs td, table.archives td { display: block; position: relative; border: 0; padding: .15em .4em .15em 8.2em; min-height: 1.6em; }
  table.fleet th[scope=row] { padding-left: .4em; font-size: 1.1em; }
  table.fleet td::before, table.runs td::before, table.archives td::before { content: attr(data-label); color: var(--muted); position: absolute; left: .4em; width: 7.5em; font-size: .85em; }
  ol.strip li.day { width: 6px; }
  dl.facts { grid-template-columns: 1fr; } dl.facts dd { margin-bottom: .4em; }
}
"""#

    /// Times in the browser's zone; the page's data again every 5 s without a reload (only
    /// `main` is replaced, and not while the reader is in a form); a run's progress from its
    /// server-sent events.
    static let js = #"""
"use strict";
function localTimes(root) {
  for (const t of root.querySelectorAll("time[datetime]")) {
    const d = new Date(t.getAttribute("datetime"));
    if (isNaN(d)) continue;
    const local = d.toLocaleString(undefined, {dateStyle: "medium", timeStyle: "short"});
    if (t.textContent.endsWith("UTC")) t.textContent = local; else t.title = local;
  }
}
function refresh() {
  const main = document.getElementById("main");
  const every = Number(main && main.dataset.refresh);
  if (!every) return;
  setInterval(async () => {
    if (document.hidden || (document.activeElement && document.activeElement.form)) return;
    try {
      const r = await fetch(location.href, {credentials: "same-origin", headers: {"X-Refresh": "1"}});
      if (r.status === 401) { location.reload(); return; }  // the session ended: to the login form
      if (!r.ok || r.redirected) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      const next = doc.getElementById("main");
      if (!next) return;
      const open = [...main.querySelectorAll("details[open]")].map(d => d.querySelector("summary")?.textContent);
      main.innerHTML = next.innerHTML;
      for (const d of main.querySelectorAll("details")) if (open.includes(d.querySelector("summary")?.textContent)) d.open = true;
      localTimes(main);
      progress();
    } catch (e) { /* the agent restarts or the network is gone: try again later */ }
  }, every * 1000);
}
let source = null;
function progress() {
  const box = document.getElementById("progress");
  if (!box || source) return;
  source = new EventSource(box.dataset.events);
  source.addEventListener("progress", ev => {
    const p = JSON.parse(ev.data);
    const set = (k, v) => { const e = document.querySelector('#progress [data-field="' + k + '"]'); if (e) e.textContent = v ?? ""; };
    set("phase", p.phase); set("sent", p.sent); set("rate", p.rate); set("files", p.files); set("path", p.current_path);
    (window.relayProgressSeen = window.relayProgressSeen || []).push(p.bytes_to_server);
  });
  source.addEventListener("end", () => {
    source.close(); source = null; window.relayProgressEnded = true;
    setTimeout(() => location.reload(), 1000);
  });
}
document.addEventListener("DOMContentLoaded", () => { localTimes(document); refresh(); progress(); });
"""#
}
