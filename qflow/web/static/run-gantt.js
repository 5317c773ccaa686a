/* A Gantt of the run's attempts: one row per task (a mapped node's elements share one
   row), one bar per attempt, the critical path outlined. */
"use strict";
(function (Q) {
  const LABEL = 230, ROW = 18, BAR = 12, TOP = 22;

  /** ``data``: {span: seconds, rows: [{node, label, bars: [[from, to, state, attempt]]}], critical: []}. */
  Q.drawGantt = function (box, data, onSelect) {
    const width = Math.max(600, box.clientWidth - 4);
    const plot = width - LABEL - 10;
    const span = Math.max(data.span, 0.001);
    const scale = (t) => LABEL + (t / span) * plot;
    const height = TOP + data.rows.length * ROW + 6;
    const root = Q.svg("svg", { width, height, id: "gantt" });
    for (const [t, text] of ticks(span)) {
      root.append(Q.svg("line", { class: "axis", x1: scale(t), x2: scale(t), y1: 14, y2: height }));
      root.append(Q.svg("text", { class: "tick", x: scale(t) + 2, y: 11 }, text));
    }
    const critical = new Set(data.critical);
    data.rows.forEach((row, i) => {
      const y = TOP + i * ROW;
      const g = Q.svg("g", { class: "gantt-row", "data-node": row.node });
      g.append(Q.svg("rect", { class: "hover", x: 0, y, width, height: ROW, fill: "transparent" }));
      g.append(Q.svg("text", { x: 4, y: y + 13 }, clip(row.label, 32)));
      for (const [from, to, state, attempt] of row.bars) {
        const x = scale(from);
        const bar = Q.svg("rect", { class: "bar seg" + (critical.has(row.node) ? " critical" : ""),
          "data-state": state, x, y: y + 3, width: Math.max(2, scale(to) - x), height: BAR, rx: 2 });
        bar.append(Q.svg("title", {}, `${row.label} attempt ${attempt}: ${state}, ${Q.duration(to - from)}`));
        g.append(bar);
      }
      g.addEventListener("click", () => onSelect(row.node));
      root.append(g);
    });
    box.replaceChildren(root);
    if (data.more) box.append(Q.el("p", { class: "muted", text: `${data.more} more tasks are not drawn.` }));
    if (!data.rows.length) box.append(Q.el("p", { class: "muted", text: "No attempt has started yet." }));
  };

  function ticks(span) {
    const steps = [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400];
    const step = steps.find((s) => span / s <= 8) || 86400;
    const out = [];
    for (let t = 0; t <= span + 1e-9; t += step) out.push([t, Q.duration(t)]);
    return out;
  }

  function clip(text, n) { return text.length > n ? text.slice(0, n - 1) + "…" : text; }
})(window.Qflow);
