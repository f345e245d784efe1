"use strict";
/* The CARS dashboard: fills the server-rendered page from the JSON API and follows GET /events/stream.
   Every value that comes from the API goes into the page as text (text nodes, textContent), never as
   markup, so a test id like "<script>" is shown as itself. */
(() => {
  const FEED_MAX = 200; // events kept in the live feed
  const PAGE = 1000; // GET /events page size (its maximum)
  const REFRESH_DELAY_MS = 250; // a burst of events causes one refresh
  const REFRESH_EVERY_MS = 30000; // "last seen" and friends age even when nothing happens
  const VIEW_LAG_MS = 1500; // views (GET /repairs, /services) may be this far behind the event stream
  const HEARTBEAT = "service.heartbeat_recorded";
  const HEALED = new Set(["completed", "approved", "applied"]);
  // Unrepairable failures (product regressions, infrastructure) are not a failed heal: CARS never tries.
  const UNHEALED = new Set(["abandoned", "rejected"]);
  const OPEN = new Set(["validating", "completed", "approved"]);
  const ENVIRONMENT_TYPES = ["environment.requested", "environment.provisioned", "environment.failed",
    "environment.released", "environment.expired"];

  // ------------------------------------------------------------------------------------ helpers

  const $ = (selector) => document.querySelector(selector);

  /** An element with properties (class, dataset, title, ...) and children (nodes, or strings as text). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else node[key] = value;
    }
    node.append(...children.map((c) => (c instanceof Node ? c : String(c ?? ""))));
    return node;
  }

  /** A timestamp in local time: the time alone when it is today, else the date too. */
  function when(iso) {
    if (!iso) return "";
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return String(iso);
    const today = date.toDateString() === new Date().toDateString();
    return today ? date.toLocaleTimeString() : date.toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
  }

  function timeCell(iso) {
    return el("time", { dateTime: iso || "", title: iso || "" }, when(iso));
  }

  const short = (id) => String(id ?? "").slice(0, 8);
  const percent = (x) => (x === null || x === undefined ? "" : `${Math.round(Number(x) * 100)}%`);

  /** Replace a table's body: one row per item, or one "empty" row saying so. */
  function fill(tableId, items, row, empty) {
    const body = $(`#${tableId} tbody`);
    if (!items.length) {
      const span = $(`#${tableId} thead tr`).children.length;
      body.replaceChildren(el("tr", { class: "empty" }, el("td", { colSpan: span }, empty)));
      return;
    }
    body.replaceChildren(...items.map(row));
  }

  const cells = (...values) => values.map((v) => el("td", {}, v));

  function showError(text) {
    const box = $("#error");
    box.textContent = text;
    box.hidden = !text;
  }

  async function getJSON(url) {
    const response = await fetch(url, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
    return response.json();
  }

  class Unauthorized extends Error {}

  /** POST a command; with the API token the operator gave (CARS_API_TOKEN), when there is one. */
  async function post(url) {
    const headers = { Accept: "application/json" };
    const typed = $("#api-token").value.trim();
    if (typed) sessionStorage.setItem("cars-api-token", typed);
    const token = sessionStorage.getItem("cars-api-token");
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(url, { method: "POST", headers });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const why = [body.error, ...(body.errors || [])].filter(Boolean).join("; ");
      throw new (response.status === 401 ? Unauthorized : Error)(why || `HTTP ${response.status}`);
    }
    return body;
  }

  // One refresh reads each URL once, however many tiles and tables use it.
  let cache = new Map();
  function load(url) {
    if (!cache.has(url)) cache.set(url, getJSON(url));
    return cache.get(url);
  }

  /** Every recorded event of these types, oldest first (pages through GET /events). */
  function eventsOf(types) {
    const key = `events:${types.join(",")}`;
    if (!cache.has(key)) {
      cache.set(key, (async () => {
        const found = [];
        let after = 0;
        for (;;) {
          const params = new URLSearchParams({ after: String(after), limit: String(PAGE) });
          for (const t of types) params.append("type", t);
          const page = await getJSON(`/events?${params}`);
          found.push(...page.events);
          if (page.events.length < PAGE) return found;
          after = page.next_after;
        }
      })());
    }
    return cache.get(key);
  }

  // ------------------------------------------------------------------------------- data sources
  // One function per dataset. flakyTests and environments fold the event history because their
  // endpoints (GET /tests/flaky, GET /environments) are not served yet: switch each one to its
  // endpoint when it is, and the tiles and tables follow.

  const source = {
    async repairs() {
      return (await load("/repairs")).repairs;
    },

    async repair(id) {
      return load(`/repairs/${encodeURIComponent(id)}`);
    },

    async services() {
      return (await load("/services")).services;
    },

    async flakyTests() {
      const tests = new Map();
      for (const ev of await eventsOf(["test.flakiness.changed", "test.quarantined"])) {
        const d = ev.data;
        const key = `${d.project}\u0000${d.test_id}`;
        const t = tests.get(key) || { project: d.project, test_id: d.test_id, flaky: false, flip_rate: null,
          since: null, quarantined_since: null };
        if (ev.type === "test.flakiness.changed") Object.assign(t, { flaky: d.flaky, flip_rate: d.flip_rate,
          since: ev.occurred_at });
        else t.quarantined_since = t.quarantined_since || ev.occurred_at;
        tests.set(key, t);
      }
      return [...tests.values()].filter((t) => t.flaky || t.quarantined_since);
    },

    async environments() {
      const envs = new Map();
      for (const ev of await eventsOf(ENVIRONMENT_TYPES)) {
        const d = ev.data;
        const e = envs.get(d.environment_id) || { environment_id: d.environment_id, template: "", backend: "",
          purpose: "", status: "", since: null, expires_at: null };
        const status = { "environment.requested": "requested", "environment.provisioned": "active",
          "environment.failed": "failed", "environment.released": "released",
          "environment.expired": "expired" }[ev.type];
        Object.assign(e, { status, since: ev.occurred_at });
        if (ev.type === "environment.requested") Object.assign(e, { template: d.template, backend: d.backend,
          purpose: d.purpose });
        if (ev.type === "environment.provisioned") Object.assign(e, { backend: d.backend, expires_at: d.expires_at });
        envs.set(d.environment_id, e);
      }
      return [...envs.values()].sort((a, b) => String(b.since).localeCompare(String(a.since)));
    },
  };

  // ------------------------------------------------------------------------------------- tiles
  // Each tile is one function returning {value, detail}. Heal rate is computed from GET /repairs
  // until GET /statistics is served.

  const tiles = {
    async "heal-rate"() {
      const repairs = await source.repairs();
      const healed = repairs.filter((r) => HEALED.has(r.status)).length;
      const done = healed + repairs.filter((r) => UNHEALED.has(r.status)).length;
      if (!done) return { value: "–", detail: "no verdicts yet" };
      return { value: `${Math.round((100 * healed) / done)}%`, detail: `${healed} validated of ${done} with a verdict` };
    },

    async "open-repairs"() {
      const open = (await source.repairs()).filter((r) => OPEN.has(r.status));
      const waiting = open.filter((r) => r.status === "completed" && r.needs_approval).length;
      return { value: String(open.length), detail: `${waiting} awaiting approval` };
    },

    async "flaky-tests"() {
      const tests = await source.flakyTests();
      const quarantined = tests.filter((t) => t.quarantined_since).length;
      return { value: String(tests.filter((t) => t.flaky).length), detail: `${quarantined} quarantined` };
    },

    async "active-environments"() {
      const envs = await source.environments();
      const requested = envs.filter((e) => e.status === "requested").length;
      return { value: String(envs.filter((e) => e.status === "active").length), detail: `${requested} being provisioned` };
    },

    async "live-services"() {
      const services = await source.services();
      const lost = services.filter((s) => s.status === "lost").length;
      return { value: String(services.filter((s) => s.status === "alive").length), detail: `${lost} lost` };
    },
  };

  async function renderTile(name) {
    const tile = $(`#tile-${name}`);
    try {
      const { value, detail } = await tiles[name]();
      tile.querySelector(".value").textContent = value;
      tile.querySelector(".detail").textContent = detail;
    } catch (error) {
      tile.querySelector(".value").textContent = "?";
      tile.querySelector(".detail").textContent = "could not load";
      throw error;
    }
  }

  // ------------------------------------------------------------------------------------ tables

  let selected = null; // the repair shown in the detail view

  async function renderRepairs() {
    const repairs = await source.repairs();
    fill("repairs", repairs, (r) => {
      const review = el("button", { type: "button", class: "review", onclick: () => select(r.repair_id) },
        r.status === "completed" && r.needs_approval ? "Review" : "Details");
      return el("tr", { dataset: { repairId: r.repair_id, status: r.status }, class: r.repair_id === selected ? "selected" : "" },
        ...cells(r.project, el("code", {}, r.test_id), r.category, el("span", { class: `status status-${r.status}` }, r.status),
          r.strategy || "", percent(r.confidence), timeCell(r.updated_at), review));
    }, "No repairs yet.");
  }

  async function renderFlaky() {
    fill("flaky", await source.flakyTests(), (t) => el("tr", {}, ...cells(t.project, el("code", {}, t.test_id),
      t.flaky ? "yes" : "no", percent(t.flip_rate), timeCell(t.since), t.quarantined_since ? timeCell(t.quarantined_since) : "no")),
    "No flaky tests.");
  }

  async function renderEnvironments() {
    fill("environments", (await source.environments()).slice(0, 50), (e) => el("tr", { dataset: { status: e.status } },
      ...cells(el("code", { title: e.environment_id }, short(e.environment_id)), e.template, e.backend,
        el("span", { title: e.purpose }, String(e.purpose).split(":")[0]),
        el("span", { class: `status status-${e.status}` }, e.status), timeCell(e.since), timeCell(e.expires_at))),
    "No environments.");
  }

  async function renderServices() {
    fill("services", await source.services(), (s) => el("tr", { dataset: { status: s.status } },
      ...cells(s.instance, s.role, (s.actors || []).join(", "), s.host || "",
        el("span", { class: `status status-${s.status}` }, s.status), timeCell(s.last_seen_at))),
    "No services.");
  }

  // ------------------------------------------------------------------------- repair detail + diff

  function diffLines(patch) {
    return String(patch || "").split("\n").map((line) => {
      let kind = "ctx";
      if (line.startsWith("+++") || line.startsWith("---") || line.startsWith("diff ")) kind = "file";
      else if (line.startsWith("@@")) kind = "hunk";
      else if (line.startsWith("+")) kind = "add";
      else if (line.startsWith("-")) kind = "del";
      return el("span", { class: `line ${kind}` }, `${line}\n`);
    });
  }

  async function renderDetail() {
    const box = $("#repair-detail");
    if (!selected) {
      box.hidden = true;
      return;
    }
    const r = await source.repair(selected);
    box.hidden = false;
    box.dataset.repairId = r.repair_id;
    box.dataset.status = r.status;
    $("#detail-title").replaceChildren(el("code", {}, r.test_id), ` (${r.project}, ${r.category}): ${r.status}`);
    $("#detail-reason").textContent = r.reason || "";
    fill("detail-candidates", r.candidates || [], (c) => el("tr", {}, ...cells(c.round, c.rank, c.strategy,
      percent(c.confidence), c.verdict || "pending", c.reason || "")), "No candidates.");
    const diff = $("#detail-diff");
    if (r.patch) diff.replaceChildren(...diffLines(r.patch));
    else diff.replaceChildren(el("span", { class: "line ctx" }, "No validated patch."));
    $("#detail-actions").hidden = r.status !== "completed";
  }

  function select(id) {
    selected = id;
    $("#action-status").textContent = "";
    for (const tr of document.querySelectorAll("#repairs tbody tr")) {
      tr.classList.toggle("selected", tr.dataset.repairId === id);
    }
    cache.delete(`/repairs/${encodeURIComponent(id)}`);
    renderDetail().catch((error) => showError(`Could not load the repair: ${error.message}`));
    $("#repair-detail").scrollIntoView({ block: "nearest" });
  }

  async function act(verb, params) {
    const id = selected;
    const status = $("#action-status");
    const buttons = [$("#approve"), $("#reject")];
    buttons.forEach((b) => { b.disabled = true; });
    try {
      const query = new URLSearchParams({ by: "dashboard", ...params });
      await post(`/repairs/${encodeURIComponent(id)}/${verb}?${query}`);
      status.textContent = verb === "approve"
        ? "Approval sent: CARS applies the patch and records it (see the live feed)."
        : "Rejection sent: CARS records it and never applies this patch.";
    } catch (error) {
      if (error instanceof Unauthorized) {
        $("#token-box").hidden = false;
        $("#api-token").focus();
        status.textContent = "Not sent: this CARS needs its API token. Enter it above and press the button again.";
      } else {
        status.textContent = `Not sent: ${error.message}`;
      }
    } finally {
      buttons.forEach((b) => { b.disabled = false; });
    }
  }

  // ------------------------------------------------------------------------------------ refresh

  // What each part of the page shows, so that an event redraws only the parts it changes.
  const SECTIONS = {
    repairs: [renderRepairs, renderDetail, () => renderTile("heal-rate"), () => renderTile("open-repairs")],
    flaky: [renderFlaky, () => renderTile("flaky-tests")],
    environments: [renderEnvironments, () => renderTile("active-environments")],
    services: [renderServices, () => renderTile("live-services")],
  };

  function sectionsOf(type) {
    if (type === HEARTBEAT) return [];
    if (type.startsWith("environment.")) return ["environments"];
    if (type.startsWith("service.")) return ["services"];
    if (type === "test.flakiness.changed") return ["flaky"];
    if (type === "test.quarantined") return ["flaky", "repairs"];
    if (/^(repair|heal|failure)\./.test(type)) return ["repairs"];
    return [];
  }

  // Refreshes run one after the other, so an older answer never paints over a newer one.
  let queue = Promise.resolve();
  function refresh(sections = Object.keys(SECTIONS)) {
    queue = queue.then(async () => {
      cache = new Map();
      const jobs = sections.flatMap((name) => SECTIONS[name].map((render) => render()));
      const failed = (await Promise.allSettled(jobs)).filter((r) => r.status === "rejected");
      showError(failed.length ? `Could not load: ${[...new Set(failed.map((r) => r.reason.message))].join("; ")}` : "");
    });
    return queue;
  }

  let pending = null;
  const stale = new Set();
  function refreshSoon(sections) {
    sections.forEach((name) => stale.add(name));
    if (pending === null && stale.size) {
      pending = setTimeout(() => {
        pending = null;
        const names = [...stale];
        stale.clear();
        refresh(names);
        // The stream reads the store, the views follow it a moment later: look once more then.
        setTimeout(() => refresh(names), VIEW_LAG_MS);
      }, REFRESH_DELAY_MS);
    }
  }

  // ---------------------------------------------------------------------------------- live feed

  const SUMMARY_KEYS = ["test_id", "run_id", "instance", "category", "strategy", "template", "by", "reason"];
  let lastPosition = 0;

  function summary(ev) {
    const d = ev.data || {};
    const parts = [...new Set(SUMMARY_KEYS.filter((k) => d[k] !== undefined && d[k] !== null && d[k] !== "")
      .map((k) => String(d[k]).slice(0, 160)))];
    if (!d.test_id && d.repair_id) parts.unshift(`repair ${short(d.repair_id)}`);
    if (d.environment_id) parts.unshift(`environment ${short(d.environment_id)}`);
    return parts.join(" · ");
  }

  function addToFeed(ev) {
    if (ev.position <= lastPosition) return; // a reconnect without Last-Event-ID replays the backlog
    lastPosition = ev.position;
    const d = ev.data || {};
    const item = el("li", { dataset: { type: ev.type, position: String(ev.position), area: ev.type.split(".")[0] } },
      el("time", { dateTime: ev.occurred_at, title: ev.occurred_at }, new Date(ev.occurred_at).toLocaleTimeString()),
      el("span", { class: "type" }, ev.type),
      el("span", { class: "project" }, d.project || ""),
      el("span", { class: "summary" }, summary(ev)));
    if (d.repair_id) {
      item.classList.add("link");
      item.title = "Show this repair";
      item.addEventListener("click", () => select(d.repair_id));
    }
    const feed = $("#feed");
    feed.prepend(item);
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }

  function connectionState(state, text) {
    const badge = $("#connection");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  function follow(startAfter) {
    // EventSource reconnects by itself and sends Last-Event-ID, which the server prefers to `after`.
    const stream = new EventSource(`/events/stream?after=${encodeURIComponent(startAfter)}`);
    stream.onopen = () => connectionState("live", "live");
    stream.onerror = () => connectionState("reconnecting", "reconnecting…");
    stream.onmessage = (message) => {
      let ev;
      try {
        ev = JSON.parse(message.data);
      } catch (error) {
        showError(`The event stream sent something that is not JSON: ${error.message}`);
        return;
      }
      addToFeed(ev);
      refreshSoon(sectionsOf(ev.type));
    };
  }

  // -------------------------------------------------------------------------------------- start

  document.addEventListener("DOMContentLoaded", () => {
    $("#show-heartbeats").addEventListener("change", (e) => $("#feed").classList.toggle("show-heartbeats", e.target.checked));
    $("#approve").addEventListener("click", () => act("approve", {}));
    $("#reject").addEventListener("click", () => {
      const reason = $("#reject-reason").value.trim();
      if (!reason) {
        $("#action-status").textContent = "Say why it is rejected first.";
        $("#reject-reason").focus();
        return;
      }
      act("reject", { reason });
    });
    refresh();
    setInterval(() => refresh(), REFRESH_EVERY_MS);
    follow(Number(document.body.dataset.startAfter) || 0);
  });
})();
