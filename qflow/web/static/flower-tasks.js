/* Flower's task list inside `qflow flower`: each row of a qflow task gets a link to its
   run in qflow's console, focused on the task. Flower draws the table from
   /tasks/datatable, whose rows carry {"run_id", "node"} as "qflow" (null for other
   Celery tasks); this only adds to the rows Flower drew, after each draw. */
"use strict";
jQuery(function ($) {
  const table = $("#tasks-table");
  if (!table.length || !$.fn.dataTable) return;
  table.on("draw.dt", function () {
    table.DataTable().rows({ page: "current" }).every(function () {
      const task = this.data() && this.data().qflow;
      const row = this.node();
      if (!task || !row || row.querySelector("a.qflow-run")) return;
      const link = document.createElement("a");
      link.className = "qflow-run badge text-bg-light ms-1";
      link.href = `/qflow/runs/${encodeURIComponent(task.run_id)}?task=${encodeURIComponent(task.node)}`;
      link.title = `qflow run ${task.run_id}, task ${task.node}`;
      link.textContent = "qflow run";
      row.cells[0].append(link);
    });
  });
});
