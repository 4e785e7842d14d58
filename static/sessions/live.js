/* Live updates for the sessions pages, without a build step or a library.
 *
 * An element with data-live-url is refreshed from that URL every
 * data-live-interval milliseconds (default 2000): the server renders the
 * fragment (same cookie session, so the same permission checks) and the
 * script swaps the element's content when it changed.  Responses without the
 * X-Live-Fragment header (say, the login page after the session expired) are
 * never swapped in.  A fragment that contains [data-live-final] ends the
 * polling (the session is over).  Without JavaScript the pages simply stay
 * static; the server-rendered content is complete.
 *
 * Also: links with data-logs-url load the logs fragment in place (forms with
 * data-confirm are handled for every page by static/js/ui.js).
 */
(function () {
  "use strict";

  var FRAGMENT_HEADER = "X-Live-Fragment";

  function fetchFragment(url) {
    var headers = {};
    headers[FRAGMENT_HEADER] = "1";
    return fetch(url, { credentials: "same-origin", cache: "no-store", headers: headers }).then(function (response) {
      if (!response.ok || response.redirected || response.headers.get(FRAGMENT_HEADER) !== "1") {
        throw new Error("not a fragment (HTTP " + response.status + ")");
      }
      return response.text();
    });
  }

  function indicators(el) {
    return el.id ? document.querySelectorAll('[data-live-for="' + el.id + '"]') : [];
  }

  function showState(el, ok) {
    var marks = indicators(el);
    for (var i = 0; i < marks.length; i++) {
      marks[i].hidden = false;
      marks[i].textContent = ok ? "live" : "reconnecting…";
      marks[i].classList.toggle("offline", !ok);
    }
  }

  /* Replace the content, keeping what the user opened or ticked. */
  function swap(el, html) {
    var open = {}, checked = {};
    el.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
    el.querySelectorAll("input[type=checkbox][id]").forEach(function (c) { checked[c.id] = c.checked; });
    var active = document.activeElement;
    if (active && el.contains(active) && /^(TEXTAREA|SELECT)$|^INPUT$/.test(active.tagName) &&
        !/^(checkbox|radio|submit|button)$/.test(active.type || "")) {
      return false; // the user is typing in there: try again next time
    }
    el.innerHTML = html;
    Object.keys(open).forEach(function (id) { var d = document.getElementById(id); if (d) { d.open = open[id]; } });
    Object.keys(checked).forEach(function (id) { var c = document.getElementById(id); if (c) { c.checked = checked[id]; } });
    el.dispatchEvent(new CustomEvent("live:updated", { bubbles: true }));
    return true;
  }

  function isFinal(el) {
    return el.hasAttribute("data-live-final") || el.querySelector("[data-live-final]") !== null;
  }

  function startPolling(el) {
    var url = el.getAttribute("data-live-url");
    var interval = parseInt(el.getAttribute("data-live-interval") || "2000", 10);
    var last = null;
    var failures = 0;

    function next(delay) { window.setTimeout(tick, delay); }

    function tick() {
      if (document.hidden) { next(interval); return; }
      fetchFragment(url).then(function (html) {
        failures = 0;
        showState(el, true);
        if (html !== last && swap(el, html)) { last = html; }
        showState(el, true);
        if (isFinal(el)) {
          indicators(el).forEach(function (m) { m.hidden = true; });
          return;
        }
        next(interval);
      }).catch(function () {
        failures += 1;
        el.classList.add("live-error");
        showState(el, false);
        next(Math.min(interval * Math.pow(2, Math.min(failures, 4)), 30000));
      });
    }

    if (!isFinal(el)) {
      showState(el, true);
      next(interval);
    }
  }

  function loadLogs(link) {
    var target = document.getElementById(link.getAttribute("data-logs-target"));
    if (!target) { return; }
    link.setAttribute("aria-busy", "true");
    link.textContent = "Loading logs…";
    fetchFragment(link.getAttribute("data-logs-url")).then(function (html) {
      target.innerHTML = html;
    }).catch(function (err) {
      target.innerHTML = '<p class="error">Could not load the logs: ' + String(err.message).replace(/[<>&]/g, "") + "</p>";
    }).then(function () {
      link.removeAttribute("aria-busy");
      link.textContent = "Refresh logs";
    });
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("[data-logs-url]");
    if (link) {
      event.preventDefault();
      if (!link.hasAttribute("aria-busy")) { loadLogs(link); }
    }
  });

  function init() {
    document.querySelectorAll("[data-live-url]").forEach(startPolling);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
