/* What the serving pages add (static/sessions/live.js does their live fragments).
 *
 * Copy buttons: <button class="copy" data-copy="<input id>" hidden> next to a
 * read-only input; shown only when a script runs (without one, the text in the
 * input can be selected by hand).  Copies with the Clipboard API, or by
 * selecting the input and execCommand("copy") where the API is not offered
 * (plain http), and says so on the button for a moment.
 * Buttons inside live fragments work too: the listener sits on the document.
 */
(function () {
  "use strict";

  function reveal(root) {
    (root || document).querySelectorAll("button.copy[data-copy]").forEach(function (b) { b.hidden = false; });
  }

  function said(button, text) {
    button.textContent = text;
    window.setTimeout(function () { button.textContent = "Copy"; }, 1500);
  }

  document.addEventListener("click", function (event) {
    var button = event.target && event.target.closest ? event.target.closest("button.copy[data-copy]") : null;
    if (!button) { return; }
    var input = document.getElementById(button.getAttribute("data-copy"));
    if (!input) { return; }
    var text = input.value;
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { said(button, "Copied"); },
        function () { input.select(); said(button, "Select and copy"); });
    } else {
      input.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      said(button, ok ? "Copied" : "Select and copy");
    }
  });

  document.addEventListener("htmx:afterSwap", function (event) { reveal(event.target); });
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { reveal(); });
  } else {
    reveal();
  }
})();
