// The session page while its cards can't work yet (templates/sessions/detail.html includes this only then: the
// session waits, or its agent is lost): once the live summary (every 2 s, htmx) shows it running with its agent
// back, the page is loaded again so run code, files, SSH and commit offer their actions instead of stale notes.
(function () {
  "use strict";
  let reloading = false;
  document.addEventListener("htmx:afterSwap", function (event) {
    if (reloading || !event.detail || !event.detail.target || event.detail.target.id !== "session-live") return;
    const summary = document.getElementById("session-summary");
    if (!summary) return;
    const running = summary.dataset.status === "RUNNING" || summary.dataset.status === "RUNNING_DEGRADED";
    if (running && !document.getElementById("agent-lost-badge")) {
      reloading = true;
      window.location.reload();
    }
  });
})();
