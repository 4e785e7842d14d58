// The session launcher (templates/sessions/create.html).  The form posts itself to the hint view
// on every change (htmx: hx-post, hx-trigger="change" on the form); the answer replaces the hint
// line and, out of band, each amount's bounds (<div data-bound-for data-min data-max>).  This
// copies those bounds onto the number inputs' min/max, so the browser's own stepper and the
// screen reader show the same limits the text does.  Choosing a mount mode or typing a mount path
// ticks the folder's box.  Without JavaScript the form still works: the server checks everything.
"use strict";

(function () {
  function applyBounds(root) {
    (root || document).querySelectorAll("[data-bound-for]").forEach((bound) => {
      const input = document.getElementById(bound.dataset.boundFor);
      if (!input || input.type !== "number") {
        return;
      }
      input.setAttribute("min", bound.dataset.min || "0");
      if (bound.dataset.max) {
        input.setAttribute("max", bound.dataset.max);
      } else {
        input.removeAttribute("max");
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("create-session");
    if (!form) {
      return;
    }
    applyBounds(form);
    document.body.addEventListener("htmx:afterSettle", () => applyBounds(form));
    form.querySelectorAll("#mount-table tbody tr").forEach((row) => {
      const box = row.querySelector('input[type="checkbox"][name="mounts"]');
      if (!box) {
        return;
      }
      row.querySelectorAll("select, input[type='text']").forEach((control) => {
        control.addEventListener("input", () => {
          if (!box.checked && (control.tagName === "SELECT" || control.value.trim())) {
            box.checked = true;
          }
        });
      });
    });
  });
})();
