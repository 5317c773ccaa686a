/* The run page: loads the run's view once, then polls for the tasks that changed since
   the last look (one indexed query on the server) and recolours what moved, without
   reloading the page. Details, logs, tracebacks and results load when asked for. */
"use strict";
(function (Q) {
  const FIELDS = ["node", "state", "attempts", "started_at", "finished_at", "worker", "queue", "error", "celery_id"];
  const ENDED = new Set(["succeeded", "failed", "canceled"]);
  const RETRYABLE = new Set(["failed", "canceled"]);
  const ELEMENT = /^(.*)\[(\d+)\]$/;
  const TABLE_ROWS = 1000;
  const PAGE = 400;              // a big map's elements per page (run-graph.js's PAGE)
  const FORGET_MS = 15000;       // well past the poll's 2 s overlap

  class RunPage {
    constructor(app) {
      this.cfg = app.dataset;
      this.model = null;
      this.cursor = null;
      this.timer = null;
      this.runState = null;
      this.graph = null;
      this.selected = this.cfg.focus || null;
      this.tableLimit = TABLE_ROWS;
    }

    async start() {
      await this.load();
      if (this.selected) this.select(this.selected);
      this.loadGantt();
      document.getElementById("gantt-refresh").addEventListener("click", () => this.loadGantt());
    }

    async load() {
      const view = await Q.getJSON(this.cfg.view);
      const codes = view.codes;
      const model = { nodes: new Map(), order: [], edges: view.edges, groups: new Map(),
                      critical: new Set(view.critical) };
      for (const tuple of view.tasks) {
        const row = toRow(tuple);
        model.nodes.set(row.node, row);
        model.order.push(row.node);
      }
      for (const [name, letters] of Object.entries(view.groups)) {
        model.groups.set(name, { codes: Array.from(letters, (c) => codes[c]) });
      }
      // A big map: counts per state, its elements worth a look, pages of it on demand.
      model.extra = [];
      for (const [name, m] of Object.entries(view.maps || {})) {
        const group = { big: true, size: m.size, counts: { ...m.counts }, at: Q.ms(m.at),
                        known: new Map(), ended: [], page: null };
        for (const tuple of m.window) {
          const row = toRow(tuple);
          group.known.set(Number(ELEMENT.exec(row.node)[2]), row.state);
          model.nodes.set(row.node, row);
          model.extra.push(row.node);
        }
        model.groups.set(name, group);
      }
      this.codes = codes;
      this.lettersMax = view.letters_max;
      this.total = view.run.tasks_total;
      this.model = model;
      this.cursor = view.cursor;
      this.graph = this.graph || new Q.Graph(document.getElementById("graph"), model, (id) => this.select(id),
                                             (id, first) => this.loadPage(id, first));
      this.graph.model = model;
      this.graph.render();
      if (!performance.getEntriesByName("qflow-graph").length) performance.mark("qflow-graph");
      this.renderTable();
      this.showRun(view.run);
      this.schedule();
    }

    schedule() {
      clearTimeout(this.timer);
      if (ENDED.has(this.runState)) { this.live(false); return; }
      this.live(true);
      this.timer = setTimeout(() => this.poll(), Number(this.cfg.poll) || 1000);
    }

    async poll() {
      let changes;
      try {
        changes = await Q.getJSON(`${this.cfg.changes}?since=${encodeURIComponent(this.cursor || "")}`);
      } catch (e) {
        this.live(false, `live updates paused: ${e.message}`);
        this.timer = setTimeout(() => this.poll(), 5000);
        return;
      }
      const before = this.runState;
      // A big run is counted again when a map expanded in it (before its rows are
      // applied: a map of a million would grow here element by element), and when it ends.
      const big = changes.run.tasks_total > this.lettersMax;
      if (big && (changes.run.tasks_total !== this.total || (!ENDED.has(before) && ENDED.has(changes.run.state)))) {
        await this.load();
        this.loadGantt();
        return;
      }
      this.grown = false;
      for (const tuple of changes.tasks) this.apply(toRow(tuple));
      if (this.grown) { this.graph.render(); this.renderTable(); }
      this.cursor = changes.cursor;
      this.showRun(changes.run);
      if (ENDED.has(before) && !ENDED.has(changes.run.state)) { await this.load(); return; }
      if (!ENDED.has(before) && ENDED.has(changes.run.state)) this.loadGantt();
      this.schedule();
    }

    apply(row) {
      const m = this.model;
      const element = ELEMENT.exec(row.node);
      if (element && m.nodes.has(element[1]) && m.groups.has(element[1]) && m.groups.get(element[1]).big) {
        this.applyBig(element[1], Number(element[2]), row);
      } else if (element && m.nodes.has(element[1])) {
        if (!m.groups.has(element[1])) m.groups.set(element[1], { codes: [] });
        const group = m.groups.get(element[1]);
        const index = Number(element[2]);
        if (index >= group.codes.length) {          // the map expanded since the page loaded
          for (let i = group.codes.length; i < index; i++) group.codes[i] = "pending";
          this.grown = true;
        }
        group.codes[index] = row.state;
        if (!this.grown) {
          this.graph.updateGroup(element[1], index);
          this.updateGroupRow(element[1]);
        }
      } else if (m.nodes.has(row.node)) {
        m.nodes.set(row.node, row);
        this.graph.update(row.node);
        this.updateRow(row);
      }
      if (row.node === this.selected) this.select(row.node);
    }

    /** A big map's element changed: move it from the state it was counted in (known,
        else queued, or the one it has if it ended before the map was counted). */
    applyBig(id, index, row) {
      const group = this.model.groups.get(id);
      const ended = row.finished_at && Q.ms(row.finished_at) < group.at;
      const old = group.known.has(index) ? group.known.get(index) : (ended ? row.state : "queued");
      if (old !== row.state) {
        group.counts[old] = Math.max(0, (group.counts[old] || 0) - 1);
        group.counts[row.state] = (group.counts[row.state] || 0) + 1;
      }
      group.known.set(index, row.state);
      if (ENDED.has(row.state) || row.state === "upstream_failed" || row.state === "skipped") {
        // An ended element comes again only within the poll's overlap: forgotten after.
        const now = Date.now();
        group.ended.push([index, now]);
        while (group.ended.length && now - group.ended[0][1] > FORGET_MS) group.known.delete(group.ended.shift()[0]);
      }
      const page = group.page;
      if (page && index >= page.first && index < page.first + page.codes.length) page.codes[index - page.first] = row.state;
      this.graph.updateGroup(id, index);
      this.updateGroupRow(id);
      if (this.model.nodes.has(row.node)) { this.model.nodes.set(row.node, row); this.updateRow(row); }
    }

    /** Elements ``first``… of big map ``id``, drawn when they come. */
    async loadPage(id, first) {
      const group = this.model.groups.get(id);
      if (group.loading === first) return;
      group.loading = first;
      try {
        const data = await Q.getJSON(`${this.cfg.elements}?node=${encodeURIComponent(id)}&first=${first}&count=${PAGE}`);
        group.page = { first: data.first, codes: Array.from(data.letters, (c) => this.codes[c]) };
      } catch (e) {
        group.page = { first, codes: [], error: e.message };
      }
      group.loading = null;
      this.graph.render();
    }

    showRun(run) {
      this.runState = run.state;
      const badge = document.getElementById("run-state");
      badge.textContent = run.state;
      badge.setAttribute("data-state", run.state);
      document.getElementById("run-progress").textContent = `${run.tasks_done} / ${run.tasks_total}`;
      document.getElementById("run-finished").textContent = Q.time(run.finished_at) || "—";
      document.getElementById("run-duration").textContent = Q.span(run.started_at, run.finished_at) || "—";
      for (const button of document.querySelectorAll("[data-when]")) {
        const when = button.getAttribute("data-when");
        button.disabled = when === "active" ? ENDED.has(run.state) : !RETRYABLE.has(run.state);
      }
    }

    live(on, message) {
      const note = document.getElementById("live");
      note.classList.toggle("on", on);
      note.textContent = message || (on ? "live" : "run ended; not polling");
    }

    // -- the task table -----------------------------------------------------------------
    renderTable() {
      const body = document.getElementById("tasks-body");
      const ids = this.model.order.concat(this.model.extra || []);
      const rows = ids.slice(0, this.tableLimit).map((id) => this.tableRow(id));
      body.replaceChildren(...rows);
      const more = document.getElementById("tasks-more");
      more.replaceChildren();
      if (ids.length > this.tableLimit) {
        more.append(Q.el("button", { type: "button", text: `show all ${ids.length} tasks`,
          onclick: () => { this.tableLimit = Infinity; this.renderTable(); } }));
      }
    }

    tableRow(id) {
      const row = this.model.nodes.get(id);
      const group = this.model.groups.get(id);
      const stateCell = Q.el("td", {}, Q.el("span", { class: "badge", "data-state": row.state, text: row.state }));
      if (group) stateCell.append(" ", Q.el("span", { class: "muted counts", text: groupText(group) }));
      const tr = Q.el("tr", { class: "clickable", "data-node": id, onclick: () => this.select(id) },
        Q.el("td", { class: "mono", text: group ? `${id} ×${Q.groupSize(group)}` : id }),
        stateCell,
        Q.el("td", { text: String(row.attempts) }),
        Q.el("td", { class: "mono", text: row.worker || "" }),
        Q.el("td", { text: row.queue || "" }),
        Q.el("td", { text: Q.span(row.started_at, row.finished_at) }),
        Q.el("td", { class: "err", text: row.error || "" }));
      if (id === this.selected) tr.classList.add("selected");
      return tr;
    }

    updateRow(row) {
      const old = document.querySelector(`#tasks-body tr[data-node="${CSS.escape(row.node)}"]`);
      if (old) old.replaceWith(this.tableRow(row.node));
    }

    updateGroupRow(id) {
      const cell = document.querySelector(`#tasks-body tr[data-node="${CSS.escape(id)}"] .counts`);
      if (cell) cell.textContent = groupText(this.model.groups.get(id));
    }

    // -- one task: details, attempts, logs, traceback, result ---------------------------
    async select(id) {
      this.selected = id;
      for (const tr of document.querySelectorAll("#tasks-body tr.selected")) tr.classList.remove("selected");
      const tr = document.querySelector(`#tasks-body tr[data-node="${CSS.escape(id)}"]`);
      if (tr) tr.classList.add("selected");
      const parent = ELEMENT.exec(id);
      if (this.graph) this.graph.select(parent && this.model.groups.has(parent[1]) ? parent[1] : id, false);
      const panel = document.getElementById("detail");
      let data;
      try {
        data = await Q.getJSON(`${this.cfg.task}?node=${encodeURIComponent(id)}`);
      } catch (e) {
        panel.replaceChildren(Q.el("p", { class: "form-error", text: e.message }));
        return;
      }
      if (this.selected !== id) return;
      panel.replaceChildren(...this.detail(data));
    }

    detail(data) {
      const t = data.task;
      const facts = [["state", Q.el("span", { class: "badge", "data-state": t.state, text: t.state })],
        ["task", t.task], ["attempts", String(t.attempts)], ["worker", t.worker || "—"],
        ["queue", t.queue || "—"], ["started", Q.time(t.started_at) || "—"],
        ["finished", Q.time(t.finished_at) || "—"], ["duration", Q.span(t.started_at, t.finished_at) || "—"]];
      if (t.celery_id && this.cfg.flower) {
        facts.push(["Flower", Q.el("a", { href: this.cfg.flower + encodeURIComponent(t.celery_id), text: t.celery_id })]);
      }
      const out = [Q.el("h3", { class: "mono", id: "detail-node", text: t.node }),
        Q.el("dl", {}, facts.map(([k, v]) => [Q.el("dt", { text: k }), Q.el("dd", {}, v)]))];
      if (t.error) out.push(Q.el("pre", { class: "error-text", text: t.error }));
      const result = Q.el("pre", { class: "result-text", hidden: true });
      out.push(Q.el("div", { class: "actions" },
        Q.el("button", { type: "button", class: "show-result", onclick: () => this.result(t.node, result) }, "Result"),
        this.retryFrom(t.node)), result);
      for (const a of data.attempts.slice().reverse()) out.push(this.attempt(t.node, a));
      return out;
    }

    attempt(node, a) {
      const text = Q.el("pre", { hidden: true });
      const show = (what) => this.attemptText(node, a.number, what, text);
      return Q.el("div", { class: "attempt", "data-attempt": a.number },
        Q.el("div", {}, Q.el("strong", { text: `attempt ${a.number}` }), " ",
          Q.el("span", { class: "badge", "data-state": a.state, text: a.state }), " ",
          Q.el("span", { class: "muted", text: `${a.worker || ""} ${Q.span(a.started_at, a.finished_at)}` })),
        a.error ? Q.el("div", { class: "err", text: errorText(a) }) : null,
        Q.el("div", { class: "actions" },
          Q.el("button", { type: "button", class: "show-logs", onclick: () => show("log") }, "Logs"),
          a.has_traceback ? Q.el("button", { type: "button", class: "show-traceback", onclick: () => show("traceback") }, "Traceback") : null),
        text);
    }

    async attemptText(node, number, what, pre) {
      pre.hidden = false;
      pre.textContent = "loading…";
      // Logs come from the API (a running attempt's live log too); tracebacks from the page's own.
      const url = what === "log"
        ? `${this.cfg.api}/tasks/${encodeURIComponent(node)}/logs?attempt=${number}`
        : `${this.cfg.attempt}?node=${encodeURIComponent(node)}&attempt=${number}`;
      try {
        const data = await Q.getJSON(url);
        const text = what === "log" ? data.text : data.traceback;
        pre.textContent = text || (what === "log" ? "(nothing was printed or logged)" : "(none)");
      } catch (e) {
        pre.textContent = e.message;
      }
      pre.setAttribute("data-what", what);
    }

    async result(node, pre) {
      pre.hidden = false;
      pre.textContent = "loading…";
      try {
        const data = await Q.getJSON(`${this.cfg.api}/tasks/${encodeURIComponent(node)}/result`);
        pre.textContent = JSON.stringify(data.value, null, 2);
      } catch (e) {
        pre.textContent = e.message;
      }
    }

    retryFrom(node) {
      const form = Q.el("form", { method: "post", action: this.cfg.retry, class: "inline retry-from" },
        Q.el("input", { type: "hidden", name: "_xsrf", value: this.cfg.xsrf }),
        Q.el("input", { type: "hidden", name: "from", value: node }),
        Q.el("button", { type: "submit", text: "Retry from here" }));
      return form;
    }

    async loadGantt() {
      const box = document.getElementById("gantt");
      try {
        const data = await Q.getJSON(this.cfg.gantt);
        if (data.note) { box.replaceChildren(Q.el("p", { class: "muted", text: data.note })); return; }
        Q.drawGantt(box, data, (id) => this.select(id));
        if (this.model) {
          this.model.critical = new Set(data.critical);
          this.graph.render();
        }
      } catch (e) {
        box.replaceChildren(Q.el("p", { class: "form-error", text: e.message }));
      }
    }
  }

  function toRow(tuple) {
    const row = {};
    FIELDS.forEach((f, i) => { row[f] = tuple[i]; });
    return row;
  }

  function errorText(a) {
    const typed = a.error_type && !a.error.startsWith(a.error_type);
    return typed ? `${a.error_type}: ${a.error}` : a.error;
  }

  function groupText(group) {
    const counts = Q.groupCounts(group);
    return Q.STATES.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ");
  }

  document.addEventListener("DOMContentLoaded", () => {
    const app = document.getElementById("run-app");
    if (!app) return;
    window.qflowRun = new RunPage(app);
    window.qflowRun.start().catch((e) => {
      document.getElementById("graph").replaceChildren(Q.el("p", { class: "form-error", text: e.message }));
    });
  });
})(window.Qflow);
