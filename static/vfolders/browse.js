/* The folder page's file table: a "select all" box for the delete checkboxes (the
 * boxes themselves work without this script; they belong to #delete-form through
 * their form attribute), and the "Delete selected" button says how many are ticked. */
(function () {
  "use strict";
  var all = document.getElementById("select-all");
  var boxes = Array.prototype.slice.call(document.querySelectorAll("#file-table input.vf-select"));
  var button = document.getElementById("delete-selected");
  if (!all || !boxes.length) return;
  all.hidden = false;

  function update() {
    var ticked = boxes.filter(function (b) { return b.checked; }).length;
    all.checked = ticked === boxes.length;
    all.indeterminate = ticked > 0 && ticked < boxes.length;
    if (button) button.textContent = ticked ? "Delete selected (" + ticked + ")" : "Delete selected";
  }

  all.addEventListener("change", function () {
    boxes.forEach(function (b) { b.checked = all.checked; });
    update();
  });
  boxes.forEach(function (b) { b.addEventListener("change", update); });
  update();
})();
