// Sorting and filtering for the mlbench report. No innerHTML anywhere: text only ever moves as
// DOM nodes or textContent, so nothing from the run store can become markup here.
(function () {
  "use strict";
  function sortKey(cell, numeric) {
    var raw = cell ? cell.getAttribute("data-sort") : "";
    if (numeric) {
      return raw === null || raw === "" ? null : parseFloat(raw);
    }
    return cell ? cell.textContent.trim().toLowerCase() : "";
  }
  function sortTable(table, index, numeric, descending) {
    table.querySelectorAll("tbody.sortable-body").forEach(function (body) {
      var rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = sortKey(a.cells[index], numeric), y = sortKey(b.cells[index], numeric);
        if (x === null || x === "") { return (y === null || y === "") ? 0 : 1; }  // missing last
        if (y === null || y === "") { return -1; }
        var order = x < y ? -1 : (x > y ? 1 : 0);
        return descending ? -order : order;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    var headers = table.querySelectorAll("thead th");
    headers.forEach(function (th, index) {
      var button = th.querySelector("button.sort");
      if (!button) { return; }
      button.addEventListener("click", function () {
        var numeric = th.getAttribute("data-type") === "num";
        var current = th.getAttribute("aria-sort");
        // Numbers first sort best-first (descending), text A to Z; each further click flips.
        var descending = current ? current === "ascending" : numeric;
        headers.forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        sortTable(table, index, numeric, descending);
      });
    });
  });
  var samples = document.getElementById("samples");
  var data = document.getElementById("records-data");
  if (samples && data) {
    // [task, doc_id, correct, prediction, gold, output, prompt_tail, truncated] per record
    var body = samples.tBodies[0];
    var cell = function (row, text, pre) {
      var td = document.createElement("td");
      if (pre) {
        var block = document.createElement("pre");
        block.textContent = text;
        td.appendChild(block);
      } else {
        td.textContent = text;
      }
      row.appendChild(td);
      return td;
    };
    JSON.parse(data.textContent).forEach(function (r) {
      var row = document.createElement("tr");
      row.className = r[2] ? "right" : "wrong";
      row.setAttribute("data-correct", r[2] ? "true" : "false");
      row.setAttribute("data-task", r[0]);
      cell(row, r[0], false);
      cell(row, r[1], false);
      cell(row, r[2] ? "yes" : "no", false);
      cell(row, r[3], true);
      cell(row, r[4], true);
      cell(row, r[5], true);
      var details = document.createElement("details");
      var summary = document.createElement("summary");
      summary.textContent = (r[7] ? "\u2026" : "") + "prompt";
      var prompt = document.createElement("pre");
      prompt.textContent = r[6];
      details.appendChild(summary);
      details.appendChild(prompt);
      cell(row, "", false).appendChild(details);
      body.appendChild(row);
    });
  }
  if (samples) {
    var wrongOnly = document.getElementById("wrong-only");
    var task = document.getElementById("task-filter");
    var search = document.getElementById("text-filter");
    var shown = document.getElementById("shown-count");
    var apply = function () {
      var needle = search.value.toLowerCase();
      var count = 0;
      Array.prototype.forEach.call(samples.tBodies[0].rows, function (row) {
        var visible = (!wrongOnly.checked || row.getAttribute("data-correct") === "false") &&
          (task.value === "" || row.getAttribute("data-task") === task.value) &&
          (needle === "" || row.textContent.toLowerCase().indexOf(needle) !== -1);
        row.hidden = !visible;
        if (visible) { count += 1; }
      });
      shown.textContent = String(count);
    };
    [wrongOnly, task, search].forEach(function (control) {
      control.addEventListener("input", apply);
      control.addEventListener("change", apply);
    });
    apply();
  }
})();
