/* The folder list's sizes (templates/vfolders/folder_list.html, vfolders.views.folder_sizes).
 *
 * htmx loads them once, after the page shows: #scope-usage has hx-get and hx-trigger="load", and
 * the one response carries the quota scopes' gauges (swapped for #scope-usage) and every folder's
 * size (swapped by id for its "measuring…" placeholder, hx-swap-oob).  This script only makes a
 * failed load say so: a response that is not the fragment (X-Live-Fragment: 1; say, the login page
 * after the session expired, or an error page) is not swapped in, and every placeholder left says
 * "unknown".  With htmx's events only (no eval, no inline script).
 */
(function () {
  "use strict";

  function fromSizes(detail) {
    var el = (detail.requestConfig && detail.requestConfig.elt) || detail.elt;
    return !!(el && el.hasAttribute && el.hasAttribute("data-sizes-url"));
  }

  function isFragment(xhr) {
    return !!xhr && xhr.status >= 200 && xhr.status < 300 && xhr.getResponseHeader("X-Live-Fragment") === "1";
  }

  function giveUp() {
    document.querySelectorAll("[data-size-pending]").forEach(function (el) {
      el.textContent = el.id ? "unknown" : "Storage: unknown (the sizes could not be loaded; reload to try again)";
      el.title = "the sizes could not be loaded; reload the page to try again";
      el.removeAttribute("data-size-pending");
    });
    var block = document.getElementById("scope-usage");
    if (block) { block.removeAttribute("aria-busy"); }
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    if (fromSizes(event.detail) && !isFragment(event.detail.xhr)) { event.detail.shouldSwap = false; }
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    if (fromSizes(event.detail) && !isFragment(event.detail.xhr)) { giveUp(); }
  });
  document.addEventListener("htmx:sendError", function (event) {
    if (fromSizes(event.detail)) { giveUp(); }
  });
})();
