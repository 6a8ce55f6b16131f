// The rows and filters of a per-sample page of the mlbench report.
// No innerHTML anywhere: text only ever moves as DOM nodes or textContent, so nothing from the
// run store can become markup here.
(function () {
  "use strict";
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
