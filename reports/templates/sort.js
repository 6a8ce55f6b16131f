// Sorting of the mlbench report's tables (index and run pages).
// No innerHTML anywhere: text only ever moves as DOM nodes or textContent, so nothing from the
// run store can become markup here.
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
})();
