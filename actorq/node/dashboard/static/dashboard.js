// actorq dashboard: polls the JSON API every 2 s and renders it. Job data is put in the page
// as text only (textContent), never as markup.
"use strict";
(function () {
  const POLL_MS = 2000;
  const STATES = ["blocked", "scheduled", "ready", "leased", "retry", "succeeded", "failed", "dead", "cancelled"];
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  let cursor = null;       // the jobs page's `after`, null: the first page
  let nextCursor = null;
  let selected = null;     // the job whose detail is shown

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) node.addEventListener(ev, fn);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" || typeof child === "number" ? String(child) : child);
    }
    return node;
  }

  function ago(seconds, now) {
    if (seconds === null || seconds === undefined) return "-";
    let delta = now - seconds;
    const ahead = delta < 0;
    delta = Math.abs(delta);
    let text = Math.round(delta) + "s";
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (delta >= size) { text = Math.floor(delta / size) + unit; break; }
    }
    return ahead ? "in " + text : text + " ago";
  }

  function when(seconds) {
    return seconds === null || seconds === undefined ? "-" : new Date(seconds * 1000).toISOString().replace(".000", "");
  }

  function problem(text) {
    const box = document.getElementById("problem");
    box.hidden = !text;
    box.textContent = text || "";
  }

  async function api(path, method) {
    const init = { method: method || "GET", credentials: "same-origin", headers: {} };
    if (init.method === "POST") init.headers["X-CSRF-Token"] = csrf;
    const response = await fetch(path, init);
    const body = await response.json().catch(() => ({ error: response.status + " " + response.statusText }));
    if (!response.ok) throw new Error(body.error || String(response.status));
    return body;
  }

  function state(name) { return el("span", { class: "state state-" + name }, name); }

  // -- the tree ------------------------------------------------------------------------------
  function treeItem(node) {
    const parts = [el("strong", {}, String(node.id))];
    if (node.type === "supervisor") parts.push(" ", el("span", { class: "kind" }, "supervisor " + (node.strategy || "")));
    else if (node.kind || node.type) parts.push(" ", el("span", { class: "kind" }, String(node.kind || node.type)));
    if (Number.isInteger(node.pid)) parts.push(" ", el("span", { class: "mono" }, "pid " + node.pid));
    parts.push(" ", state(String(node.state || "?")));
    if (node.restarts) parts.push(" ", el("span", { class: "restarts" }, "restarts " + node.restarts));
    const item = el("li", { "data-id": String(node.id) }, ...parts);
    if (node.children && node.children.length) item.append(el("ul", {}, ...node.children.map(treeItem)));
    return item;
  }

  function renderTree(data) {
    const box = document.getElementById("tree");
    box.replaceChildren(data.tree ? el("ul", { class: "tree" }, treeItem(data.tree))
      : el("p", { class: "muted", id: "no-node" }, "No tree: " + (data.node_problem || "no node answers")));
  }

  // -- queues --------------------------------------------------------------------------------
  async function act(path, what) {
    try {
      const answer = await api(path, "POST");
      problem(null);
      document.getElementById("updated").textContent = what + ": " + answer.message;
    } catch (err) {
      problem(what + ": " + err.message);
    }
    refresh();
  }

  // a queue's last minute (queue_entries' "last_minute"): per minute, and waits in ms, s, m, h
  function perMinute(count, seconds) {
    const n = seconds > 0 ? (60 * count) / seconds : 0;
    return n >= 10 || n === 0 ? Math.round(n).toLocaleString() : n.toFixed(1);
  }

  function duration(value) {
    if (value === null || value === undefined) return "-";
    if (value < 1) return Math.round(value * 1000) + "ms";
    if (value < 60) return value.toFixed(1) + "s";
    return value < 3600 ? Math.round(value / 60) + "m" : Math.round(value / 3600) + "h";
  }

  function minuteCells(m) {
    return [el("td", { class: "num rate" }, perMinute(m.finished, m.seconds)),
      el("td", { class: "num" }, perMinute(m.failed, m.seconds)),
      el("td", { class: "num wait" }, duration(m.wait_mean)), el("td", { class: "num" }, duration(m.wait_max))];
  }

  function renderQueues(data) {
    const table = document.getElementById("queues");
    table.tHead.replaceChildren(el("tr", {}, el("th", {}, "queue"), el("th", {}, ""),
      ...STATES.map((s) => el("th", {}, s)), el("th", {}, "oldest ready"),
      el("th", { title: "jobs finished per minute, over the last minute" }, "done/min"),
      el("th", { title: "jobs failed or dead per minute, over the last minute" }, "failed/min"),
      el("th", { title: "mean wait from due to leased, of the last minute's leases" }, "wait avg"),
      el("th", { title: "longest wait from due to leased, of the last minute's leases" }, "wait max"), el("th", {})));
    const names = Object.keys(data.queues);
    const rows = names.map((name) => {
      const q = data.queues[name];
      const button = q.paused
        ? el("button", { class: "resume", on: { click: () => act("/api/queues/" + encodeURIComponent(name) + "/resume", "resume " + name) } }, "resume")
        : el("button", { class: "pause", on: { click: () => act("/api/queues/" + encodeURIComponent(name) + "/pause", "pause " + name) } }, "pause");
      return el("tr", { "data-queue": name }, el("td", {}, name), el("td", {}, state(q.paused ? "paused" : "running")),
        ...STATES.map((s) => el("td", { class: "num" }, (q.states[s] || 0).toLocaleString())),
        el("td", {}, q.oldest_ready_age === null ? "-" : ago(data.now - q.oldest_ready_age, data.now)),
        ...minuteCells(q.last_minute), el("td", {}, button));
    });
    table.tBodies[0].replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "muted" }, "no queues yet"))]));
  }

  // -- leases and schedules --------------------------------------------------------------------
  function renderLeases(data) {
    const box = document.getElementById("leases");
    if (!data.leases.length) { box.replaceChildren(el("p", { class: "muted" }, "No job is leased.")); return; }
    box.replaceChildren(...data.leases.map((lease) => el("div", { class: "lease" },
      el("div", {}, el("strong", { class: "mono" }, lease.owner), " ", el("span", { class: "muted" }, lease.jobs.length + " job(s)")),
      el("ul", {}, ...lease.jobs.map((job) => el("li", {}, el("span", { class: "mono" }, job.id), " " + job.task + " (" + job.queue + ")"))))),
    ...(data.leases_truncated ? [el("p", { class: "muted" }, "(more leases not shown)")] : []));
  }

  function renderSchedules(data) {
    const body = document.querySelector("#schedules tbody");
    const rows = data.schedules.map((s) => el("tr", {}, el("td", {}, s.name), el("td", { class: "mono" }, s.cron + " " + s.timezone),
      el("td", {}, s.task), el("td", {}, when(s.last_fired)), el("td", {}, when(s.next_fire) + " (" + ago(s.next_fire, data.now) + ")")));
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "muted" }, "no schedules"))]));
  }

  function renderBreakers(data) {
    const body = document.querySelector("#breakers tbody");
    const row = (b) => el("tr", b.key === null ? { "data-task": b.task } : { "data-task": b.task, "data-key": b.key },
      el("td", {}, b.task), el("td", { class: "mono" }, b.key === null ? "-" : b.key), el("td", {}, state(b.state)),
      el("td", { class: "num" }, String(b.failures)), el("td", {}, b.opened_at === null ? "-" : ago(b.opened_at, data.now)),
      el("td", {}, b.reopens_at === null ? "-" : when(b.reopens_at)));
    const rows = data.breakers.map(row).concat(data.key_breakers.map(row));
    const counts = data.key_breaker_counts;
    const more = (counts.open || 0) + (counts.half_open || 0) - data.key_breakers.length;
    if (more > 0) rows.push(el("tr", {}, el("td", { class: "muted", colspan: "6" }, "... and " + more + " more keys not closed")));
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "muted" }, "no task declares a circuit breaker"))]));
  }

  // -- jobs ----------------------------------------------------------------------------------
  function jobQuery() {
    const params = new URLSearchParams();
    for (const key of ["state", "queue", "task"]) {
      const value = document.getElementById("f-" + key).value.trim();
      if (value) params.set(key, value);
    }
    if (cursor) params.set("after", cursor);
    return params.toString();
  }

  function renderJobs(page, now) {
    nextCursor = page.next;
    document.getElementById("f-more").hidden = !page.next;
    document.getElementById("f-first").hidden = !cursor;
    const rows = page.jobs.map((job) => {
      const id = encodeURIComponent(job.id);
      const buttons = [];
      if (job.state === "dead" || job.state === "failed")
        buttons.push(el("button", { class: "retry", on: { click: (ev) => { ev.stopPropagation(); act("/api/jobs/" + id + "/retry", "retry " + job.id); } } }, "retry"));
      if (["blocked", "scheduled", "ready", "leased", "retry"].includes(job.state))
        buttons.push(el("button", { class: "cancel", on: { click: (ev) => { ev.stopPropagation(); act("/api/jobs/" + id + "/cancel", "cancel " + job.id); } } }, "cancel"));
      return el("tr", { class: "job", "data-job": job.id, "data-state": job.state, on: { click: () => { selected = job.id; showDetail(); } } },
        el("td", { class: "mono" }, job.id), el("td", {}, state(job.state)), el("td", {}, job.queue), el("td", {}, job.task),
        el("td", { class: "num" }, job.attempts + "/" + job.max_attempts), el("td", {}, ago(job.created_at, now)),
        el("td", { class: "err" }, job.last_error || ""), el("td", {}, ...buttons));
    });
    document.querySelector("#jobs tbody").replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "muted" }, "no jobs"))]));
  }

  function show(value) { return value === null || value === undefined ? "-" : JSON.stringify(value); }

  async function showDetail() {
    const box = document.getElementById("detail");
    if (!selected) { box.hidden = true; return; }
    let job;
    try { job = await api("/api/jobs/" + encodeURIComponent(selected)); } catch (err) { box.hidden = false; box.replaceChildren(el("p", { class: "muted" }, selected + ": " + err.message)); return; }
    const rows = [["state", state(job.state)], ["task", job.task], ["queue", job.queue], ["attempts", job.attempts + " of " + job.max_attempts],
      ["args", job.payload_problem || show(job.args)], ["kwargs", show(job.kwargs)],
      ["result", job.result_problem || (job.result_kept ? show(job.result) : "(none kept)")],
      ["created", when(job.created_at)], ["run at", when(job.run_at)], ["finished", when(job.finished_at)],
      ["lease", job.lease ? job.lease.owner + " (lease " + job.lease.id + "), expires " + when(job.lease.expires) : "-"]];
    const list = el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
    const errors = job.errors.length ? el("ol", {}, ...job.errors.map((e) => el("li", {}, "attempt " + e.attempt + " at " + when(e.at) + ": " + e.error)))
      : el("p", { class: "muted" }, "no errors");
    box.hidden = false;
    box.replaceChildren(...[el("h3", {}, "Job ", el("span", { class: "mono" }, job.id), " ", el("button", { on: { click: () => { selected = null; showDetail(); } } }, "close")),
      list, el("h4", {}, "Errors"), errors, job.last_traceback ? el("h4", {}, "Last traceback") : null,
      job.last_traceback ? el("pre", {}, job.last_traceback) : null].filter((node) => node !== null));
  }

  // -- polling -------------------------------------------------------------------------------
  let timer = null;
  async function refresh() {
    clearTimeout(timer);
    try {
      const [data, page] = await Promise.all([api("/api/overview"), api("/api/jobs?" + jobQuery())]);
      const node = data.node;
      const rate = node && node.jobs.per_second !== null ? ", " + node.jobs.per_second.toFixed(1) + " jobs/s" : "";
      document.getElementById("node-line").textContent = (node ? "node " + node.name + " (pid " + node.pid + ") " + node.activity + rate
        + ", " + node.workers.connected + " workers" : "no node running")
        + " · journal " + data.journal;
      renderTree(data); renderQueues(data); renderLeases(data); renderSchedules(data); renderBreakers(data);
      renderJobs(page, data.now);
      if (selected) await showDetail();
      problem(null);
      document.body.dataset.loaded = "1";
      document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
    } catch (err) {
      problem("could not refresh: " + err.message);
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  const select = document.getElementById("f-state");
  for (const s of STATES) select.append(el("option", { value: s }, s));
  for (const id of ["f-state", "f-queue", "f-task"]) document.getElementById(id).addEventListener("change", () => { cursor = null; refresh(); });
  document.getElementById("filters").addEventListener("submit", (ev) => { ev.preventDefault(); cursor = null; refresh(); });
  document.getElementById("f-more").addEventListener("click", () => { cursor = nextCursor; refresh(); });
  document.getElementById("f-first").addEventListener("click", () => { cursor = null; refresh(); });
  refresh();
})();
