/* Behaviour shared by every page of the web UI, loaded from base.html.
 *
 * The Content-Security-Policy allows scripts from our own static files only
 * (no inline <script>, no on*= attributes, no javascript: URLs), so markup
 * asks for behaviour with data-* attributes:
 *
 * - form[data-confirm] asks the question before the form is submitted;
 *   a submit button with data-confirm asks its own question instead.
 */
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form || !form.getAttribute) { return; }
    var submitter = event.submitter;
    var question = (submitter && submitter.getAttribute && submitter.getAttribute("data-confirm")) ||
      form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) { event.preventDefault(); }
  });
})();

/* Escape closes the disclosure (a <details> confirm box or form) that holds the focus and gives
 * the focus back to its summary: no keyboard user is left inside an open box. */
(function () {
  "use strict";

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.defaultPrevented) { return; }
    var active = document.activeElement;
    var box = active && active.closest ? active.closest("details[open]") : null;
    if (!box) { return; }
    box.open = false;
    var summary = box.querySelector("summary");
    if (summary) { summary.focus(); }
  });
})();
