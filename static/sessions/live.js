/* What the sessions pages add to htmx (static/vendor/htmx) for their live fragments.
 *
 * The markup asks htmx for the updates: an element with hx-get and
 * hx-trigger="every 2s" is refreshed from that URL, which renders the fragment
 * with the same cookie session and permission checks; the logs button is an
 * hx-get with hx-target.  Fragment responses carry X-Live-Fragment: 1, and a
 * fragment that ends the watch (the session is over) comes with status 286,
 * which stops htmx's polling.  Elements that poll also carry data-live-url.
 *
 * This script adds, with htmx's events only (no eval, no inline script):
 * - a response without X-Live-Fragment (say, the login page after the user's
 *   session expired) is never swapped in and counts as a failure;
 * - an unchanged fragment is not swapped, nor one whose element the user is
 *   typing in (it comes again next time); <details id> and checkboxes with an
 *   id keep their state across a swap;
 * - the "live" / "reconnecting…" marks ([data-live-for=<the element's id>]);
 * - after failures, polls are skipped with back-off (2 s doubling to 30 s), and
 *   a hidden tab does not poll;
 * - the logs button says "Loading logs…" and shows why loading failed.
 * Without JavaScript the pages stay static; the server-rendered content is complete.
 * (forms with data-confirm are handled for every page by static/js/ui.js)
 */
(function () {
  "use strict";

  var FRAGMENT_HEADER = "X-Live-Fragment";
  var MAX_BACKOFF = 30000;
  var state = new WeakMap(); // polled element -> {last, failures, retryAt, final, open, checked}

  /* The element that asked for the request (an event's detail.elt is the element it fires on). */
  function source(detail) { return (detail.requestConfig && detail.requestConfig.elt) || detail.elt; }

  function isLive(el) { return !!(el && el.hasAttribute && el.hasAttribute("data-live-url")); }
  function isLogs(el) { return !!(el && el.hasAttribute && el.hasAttribute("data-logs-for")); }

  function stateOf(el) {
    var s = state.get(el);
    if (!s) { s = { last: null, failures: 0, retryAt: 0, final: false }; state.set(el, s); }
    return s;
  }

  function interval(el) {
    var match = /every\s+(\d+)(ms|s)/.exec(el.getAttribute("hx-trigger") || "");
    if (!match) { return 2000; }
    return parseInt(match[1], 10) * (match[2] === "s" ? 1000 : 1);
  }

  function isFragment(xhr) {
    return !!xhr && xhr.status >= 200 && xhr.status < 300 && xhr.getResponseHeader(FRAGMENT_HEADER) === "1";
  }

  function indicators(el) {
    return el.id ? document.querySelectorAll('[data-live-for="' + el.id + '"]') : [];
  }

  function showState(el, ok) {
    indicators(el).forEach(function (mark) {
      mark.hidden = stateOf(el).final;
      mark.textContent = ok ? "live" : "reconnecting…";
      mark.classList.toggle("offline", !ok);
    });
  }

  function isFinal(el) {
    return el.hasAttribute("data-live-final") || el.querySelector("[data-live-final]") !== null;
  }

  function userIsTyping(el) {
    var active = document.activeElement;
    return !!active && el.contains(active) && /^(TEXTAREA|SELECT|INPUT)$/.test(active.tagName) &&
      !/^(checkbox|radio|submit|button)$/.test(active.type || "");
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var el = source(event.detail);
    if (isLive(el)) {
      var s = stateOf(el);
      if (s.final || document.hidden || Date.now() < s.retryAt) { event.preventDefault(); }
    } else if (isLogs(el)) {
      el.setAttribute("aria-busy", "true");
      el.textContent = "Loading logs…";
    }
  });

  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail, el = source(detail);
    if (!isLive(el) && !isLogs(el)) { return; }
    if (!isFragment(detail.xhr)) { detail.shouldSwap = false; return; }
    if (!isLive(el)) { return; }
    var s = stateOf(el);
    if (detail.serverResponse === s.last || userIsTyping(el)) {
      detail.shouldSwap = false;
      if (detail.xhr.status === 286) { s.final = true; } // htmx stops polling only on a swap
      return;
    }
    s.last = detail.serverResponse;
    s.open = {};
    s.checked = {};
    el.querySelectorAll("details[id]").forEach(function (d) { s.open[d.id] = d.open; });
    el.querySelectorAll("input[type=checkbox][id]").forEach(function (c) { s.checked[c.id] = c.checked; });
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    var el = source(event.detail);
    if (!isLive(el)) { return; }
    var s = stateOf(el);
    Object.keys(s.open || {}).forEach(function (id) {
      var d = document.getElementById(id);
      if (d) { d.open = s.open[id]; }
    });
    Object.keys(s.checked || {}).forEach(function (id) {
      var c = document.getElementById(id);
      if (c) { c.checked = s.checked[id]; }
    });
    if (isFinal(el)) { s.final = true; }
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var el = source(event.detail), xhr = event.detail.xhr, ok = isFragment(xhr);
    if (isLive(el)) {
      var s = stateOf(el);
      if (ok) {
        s.failures = 0;
        s.retryAt = 0;
        el.classList.remove("live-error");
      } else {
        s.failures += 1;
        s.retryAt = Date.now() + Math.min(interval(el) * Math.pow(2, Math.min(s.failures, 4)), MAX_BACKOFF);
        el.classList.add("live-error");
      }
      showState(el, ok);
    } else if (isLogs(el)) {
      el.removeAttribute("aria-busy");
      el.textContent = "Refresh logs";
      var target = document.getElementById(el.getAttribute("data-logs-for"));
      if (!ok && target) {
        var message = document.createElement("p");
        message.className = "error";
        message.textContent = "Could not load the logs: " +
          (xhr && xhr.status ? "not a fragment (HTTP " + xhr.status + ")" : "the server did not answer");
        target.replaceChildren(message);
      }
    }
  });

  function init() {
    document.querySelectorAll("[data-live-url]").forEach(function (el) {
      if (isFinal(el)) { stateOf(el).final = true; }
      showState(el, true);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
