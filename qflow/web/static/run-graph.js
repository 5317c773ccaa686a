/* The run's DAG, laid out left to right in SVG: columns by longest path from the roots,
   rows ordered by the parents' positions (barycentre) to keep edges short. A mapped node
   is one box with per-state counts; expanded, it shows a page of its elements (a big
   map's pages come from the server when asked for: onPage). */
"use strict";
(function (Q) {
  const W = 172, H = 34, GROUP_H = 58, GAP_X = 48, GAP_Y = 14, PAD = 16;
  const CELL = 9, COLS = 20, PAGE = 400;
  const MAX_NODES = 3000;        // beyond this the table is the way in; the SVG stays light

  Q.Graph = class {
    /** ``model``: {nodes: Map, order: [], edges: [[p, c]], groups: Map, critical: Set}. */
    constructor(box, model, onSelect, onPage) {
      this.box = box; this.model = model; this.onSelect = onSelect; this.onPage = onPage;
      this.expanded = new Map();          // group -> first element shown
      this.shapes = new Map();            // node -> <g>
      this.selected = null;
    }

    render() {
      const m = this.model;
      const ids = m.order.slice(0, MAX_NODES);
      const shown = new Set(ids);
      const layers = layerOf(ids, m.edges.filter(([p, c]) => shown.has(p) && shown.has(c)));
      const columns = orderColumns(ids, layers, m.edges, shown);
      const pos = this.place(columns);
      const width = PAD * 2 + columns.length * (W + GAP_X) - GAP_X;
      const height = PAD * 2 + Math.max(0, ...columns.map((col) => colHeight(col, this)));
      const root = Q.svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, id: "dag" });
      const edgeLayer = Q.svg("g", { class: "edges" });
      root.append(edgeLayer);
      for (const [p, c] of m.edges) {
        if (!pos.has(p) || !pos.has(c)) continue;
        edgeLayer.append(edgePath(pos.get(p), pos.get(c), m.critical.has(p) && m.critical.has(c)));
      }
      this.shapes.clear();
      for (const id of ids) root.append(this.drawNode(id, pos.get(id)));
      this.box.replaceChildren(root);
      if (m.order.length > MAX_NODES) {
        this.box.append(Q.el("p", { class: "muted", text:
          `The graph shows the first ${MAX_NODES} of ${m.order.length} nodes; the table lists all.` }));
      }
      if (this.selected) this.select(this.selected, false);
    }

    place(columns) {
      const pos = new Map();
      const tallest = Math.max(0, ...columns.map((col) => colHeight(col, this)));
      columns.forEach((col, i) => {
        let y = PAD + (tallest - colHeight(col, this)) / 2;
        for (const id of col) {
          const h = this.heightOf(id);
          pos.set(id, { x: PAD + i * (W + GAP_X), y, h });
          y += h + GAP_Y;
        }
      });
      return pos;
    }

    heightOf(id) {
      const group = this.model.groups.get(id);
      if (!group) return H;
      if (!this.expanded.has(id)) return GROUP_H;
      const rows = Math.ceil(Math.min(PAGE, groupSize(group) - this.expanded.get(id)) / COLS);
      return GROUP_H + 22 + rows * CELL + 8;
    }

    drawNode(id, p) {
      const row = this.model.nodes.get(id);
      const group = this.model.groups.get(id);
      const g = Q.svg("g", { class: "node" + (this.model.critical.has(id) ? " critical" : ""),
        transform: `translate(${p.x},${p.y})`, "data-node": id, "data-state": row.state });
      g.append(Q.svg("rect", { class: "bg", width: W, height: p.h, rx: 5 }));   // hides edges
      g.append(Q.svg("rect", { class: "box", width: W, height: p.h, rx: 5 }));
      g.append(Q.svg("rect", { class: "state", width: 7, height: p.h, rx: 2 }));
      const label = group ? `${id}  ×${groupSize(group)}` : id;
      g.append(Q.svg("text", { x: 14, y: 21 }, clip(label, group ? 19 : 23)));
      g.append(Q.svg("title", {}, `${id}: ${row.state}`));
      g.addEventListener("click", () => this.select(id, true));
      if (group) this.drawGroup(g, id, group);
      this.shapes.set(id, g);
      return g;
    }

    drawGroup(g, id, group) {
      const bar = Q.svg("g", { class: "counts", transform: "translate(14,30)" });
      g.append(bar);
      const open = this.expanded.has(id);
      const toggle = Q.svg("text", { class: "toggle", x: W - 20, y: 21, "data-toggle": id,
                                     "aria-label": open ? "collapse" : "expand" }, open ? "−" : "+");
      toggle.addEventListener("click", (ev) => { ev.stopPropagation(); this.toggle(id); });
      g.append(toggle);
      this.drawCounts(bar, group);
      if (open) this.drawCells(g, id, group);
    }

    drawCounts(bar, group) {
      const counts = groupCounts(group);
      const total = groupSize(group) || 1;
      let x = 0;
      bar.replaceChildren();
      const parts = [];
      for (const state of Q.STATES) {
        const n = counts[state] || 0;
        if (!n) continue;
        const w = Math.max(2, (n / total) * (W - 28));
        bar.append(Q.svg("rect", { class: "seg", "data-state": state, x, y: 0, width: w, height: 8 }));
        x += w;
        parts.push(`${n} ${state}`);
      }
      bar.append(Q.svg("text", { class: "count-text", x: 0, y: 21 }, clip(parts.join(", "), 30)));
      bar.append(Q.svg("title", {}, parts.join(", ")));
    }

    drawCells(g, id, group) {
      const first = this.expanded.get(id);
      const size = groupSize(group);
      const last = Math.min(size, first + PAGE);
      const cells = Q.svg("g", { class: "cells", transform: `translate(14,${GROUP_H + 20})` });
      const page = group.big ? group.page : { first: 0, codes: group.codes };
      const loaded = !group.big || (page && page.first === first);
      const nav = Q.svg("text", { x: 14, y: GROUP_H + 12, class: "tick" },
                        loaded ? (page.error || `${first}–${last - 1} of ${size}`) : "loading…");
      g.append(nav);
      this.pager(g, id, first - PAGE, W - 44, "‹", first > 0);
      this.pager(g, id, first + PAGE, W - 24, "›", last < size);
      if (!loaded) {
        this.onPage(id, first);
        return;
      }
      for (let i = first; i < Math.min(last, page.first + page.codes.length); i++) {
        const k = i - first;
        const state = page.codes[i - page.first];
        const cell = Q.svg("rect", { class: "cell", "data-state": state, "data-index": i,
          x: (k % COLS) * CELL, y: Math.floor(k / COLS) * CELL, width: CELL - 1, height: CELL - 1 });
        cell.append(Q.svg("title", {}, `${id}[${i}]: ${state}`));
        cells.append(cell);
      }
      cells.addEventListener("click", (ev) => {
        const index = ev.target.getAttribute && ev.target.getAttribute("data-index");
        if (index !== null) { ev.stopPropagation(); this.onSelect(`${id}[${index}]`); }
      });
      g.append(cells);
    }

    pager(g, id, first, x, label, enabled) {
      if (!enabled) return;
      const t = Q.svg("text", { class: "toggle", x, y: GROUP_H + 12 }, label);
      t.addEventListener("click", (ev) => { ev.stopPropagation(); this.expanded.set(id, first); this.render(); });
      g.append(t);
    }

    toggle(id) {
      if (this.expanded.has(id)) this.expanded.delete(id); else this.expanded.set(id, 0);
      this.render();
    }

    /** Recolour a node after a live update. */
    update(id) {
      const g = this.shapes.get(id);
      const row = this.model.nodes.get(id);
      if (!g || !row) return;
      g.setAttribute("data-state", row.state);
      g.querySelector("title").textContent = `${id}: ${row.state}`;
    }

    /** Redraw a group's counts and, if shown, the cell of element ``index``. */
    updateGroup(id, index) {
      const g = this.shapes.get(id);
      const group = this.model.groups.get(id);
      if (!g || !group) return;
      this.drawCounts(g.querySelector("g.counts"), group);
      const cell = g.querySelector(`rect.cell[data-index="${index}"]`);
      const page = group.big ? group.page : { first: 0, codes: group.codes };
      if (cell && page) cell.setAttribute("data-state", page.codes[index - page.first]);
    }

    select(id, notify) {
      for (const g of this.box.querySelectorAll("g.node.selected")) g.classList.remove("selected");
      this.selected = id;
      const g = this.shapes.get(id);
      if (g) {
        g.classList.add("selected");
        if (!notify) g.scrollIntoView({ block: "nearest", inline: "nearest" });
      }
      if (notify) this.onSelect(id);
    }
  };

  function colHeight(col, graph) {
    return col.reduce((sum, id) => sum + graph.heightOf(id) + GAP_Y, -GAP_Y);
  }

  function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }

  function countStates(codes) {
    const counts = {};
    for (const state of codes) counts[state] = (counts[state] || 0) + 1;
    return counts;
  }
  Q.countStates = countStates;

  /** A mapped node's elements: how many, and how many in each state. */
  function groupSize(group) { return group.big ? group.size : group.codes.length; }
  function groupCounts(group) { return group.big ? group.counts : countStates(group.codes); }
  Q.groupSize = groupSize;
  Q.groupCounts = groupCounts;

  /** Longest path from a root, per node (Kahn's order; the run's graph has no cycle). */
  function layerOf(ids, edges) {
    const children = new Map(ids.map((id) => [id, []]));
    const indegree = new Map(ids.map((id) => [id, 0]));
    for (const [p, c] of edges) { children.get(p).push(c); indegree.set(c, indegree.get(c) + 1); }
    const layer = new Map(ids.map((id) => [id, 0]));
    const ready = ids.filter((id) => indegree.get(id) === 0);
    while (ready.length) {
      const id = ready.pop();
      for (const c of children.get(id)) {
        layer.set(c, Math.max(layer.get(c), layer.get(id) + 1));
        indegree.set(c, indegree.get(c) - 1);
        if (indegree.get(c) === 0) ready.push(c);
      }
    }
    return layer;
  }

  /** Columns of node ids; each column sorted by the mean row of its parents. */
  function orderColumns(ids, layer, edges, shown) {
    const columns = [];
    for (const id of ids) (columns[layer.get(id)] = columns[layer.get(id)] || []).push(id);
    const parents = new Map(ids.map((id) => [id, []]));
    for (const [p, c] of edges) if (shown.has(p) && shown.has(c)) parents.get(c).push(p);
    const row = new Map();
    columns.forEach((col) => col.forEach((id, i) => row.set(id, i)));
    for (let i = 1; i < columns.length; i++) {
      const key = (id) => {
        const ps = parents.get(id);
        return ps.length ? ps.reduce((s, p) => s + row.get(p), 0) / ps.length : row.get(id);
      };
      const keys = new Map(columns[i].map((id) => [id, key(id)]));
      columns[i].sort((a, b) => keys.get(a) - keys.get(b));
      columns[i].forEach((id, k) => row.set(id, k));
    }
    return columns.filter(Boolean);
  }

  function edgePath(a, b, critical) {
    const x1 = a.x + W, y1 = a.y + Math.min(a.h, GROUP_H) / 2, x2 = b.x, y2 = b.y + Math.min(b.h, GROUP_H) / 2;
    const mid = (x1 + x2) / 2;
    return Q.svg("path", { class: "edge" + (critical ? " critical" : ""),
                           d: `M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2},${y2}` });
  }
})(window.Qflow);
