"use strict";
/* The CARS dashboard: fills the server-rendered page from the JSON API and follows GET /events/stream.
   Every value that comes from the API goes into the page as text (text nodes, textContent), never as
   markup, so a test id like "<script>" is shown as itself. */
(() => {
  const FEED_MAX = 200; // events kept in the live feed
  const REFRESH_DELAY_MS = 250; // a burst of events causes one refresh
  const REFRESH_EVERY_MS = 30000; // "last seen" and friends age even when nothing happens
  const VIEW_LAG_MS = 1500; // the views behind every endpoint may be this far behind the event stream
  const HEARTBEAT = "service.heartbeat_recorded";
  const OPEN = new Set(["validating", "completed", "approved"]);

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


  // ------------------------------------------------------------------------------- data sources
  // One function per dataset, each reading one JSON endpoint.

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
      // GET /tests/flaky: the flaky-tests view (flip rate, last flips, quarantine state and since when)
      return (await load("/tests/flaky")).tests.map((t) => ({
        project: t.project, test_id: t.test_id, flaky: t.flaky, flip_rate: t.flip_rate,
        since: t.flaky_since || t.changed_at,
        quarantined_since: t.quarantine && t.quarantine.state !== "none" ? t.quarantine.since : null,
      })).filter((t) => t.flaky || t.quarantined_since);
    },

    async environments() {
      // GET /environments: the environments view, newest first ("provisioned" is shown as active)
      return (await load("/environments")).environments.map((e) => ({
        environment_id: e.environment_id, template: e.template, backend: e.backend, purpose: e.purpose,
        status: e.status === "provisioned" ? "active" : e.status, since: e.updated_at, expires_at: e.expires_at,
      }));
    },

    async statistics() {
      return load("/statistics");
    },
  };

  // ------------------------------------------------------------------------------------- tiles
  // Each tile is one function returning {value, detail}.

  const tiles = {
    async "heal-rate"() {
      // GET /statistics: healed over the repairs CARS tried (definitions in the README)
      const { repairs } = await source.statistics();
      if (!repairs.repairs) return { value: "–", detail: "no repairs tried yet" };
      return { value: `${Math.round(100 * (repairs.heal_rate || 0))}%`,
        detail: `${repairs.healed} healed of ${repairs.repairs} tried` };
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
