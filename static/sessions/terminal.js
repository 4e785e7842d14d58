/* The session page's terminal: xterm.js on the /stream/session/<id>/pty websocket.
 *
 * Frames are Backend.AI's: the browser sends {type:"stdin", chars:<base64>},
 * {type:"resize", rows, cols} and {type:"ping"}; the server sends
 * {type:"out", data:<base64>}, and {type:"exit"} or {type:"error"} before it
 * closes.  The login cookie authenticates the websocket (same origin only).
 * The terminal fits its box and follows window resizes; "Open terminal" is
 * enabled while the session runs (the page's live part carries the status).
 * xterm.js and its fit addon come from npm (static/vendor/xterm, installed by
 * scripts/lib/node.sh), never from a CDN.
 */
(function () {
  "use strict";

  var RUNNING = ["RUNNING", "RUNNING_DEGRADED"];
  var PING_EVERY = 30000;

  /* The Content-Security-Policy allows styles from our static files only, plus, on
   * this page, <style> elements that carry the page's nonce: xterm.js writes its
   * theme and cell-size rules into <style> elements at run time.  This script's tag
   * carries the nonce (read before the browser hides it from the DOM) and every
   * <style> element created on the page gets it.  Style attributes (xterm sets one
   * for 24-bit colours) go through the CSSOM instead, which the policy allows; the
   * policy itself never allows inline styles or scripts in the markup. */
  var STYLE_NONCE = (document.currentScript && document.currentScript.nonce) || "";
  var runtimeStylesAllowed = false;

  function allowRuntimeStyles() {
    if (runtimeStylesAllowed) { return; }
    runtimeStylesAllowed = true;
    var createElement = Document.prototype.createElement;
    Document.prototype.createElement = function (tagName) {
      var element = createElement.apply(this, arguments);
      if (STYLE_NONCE && String(tagName).toLowerCase() === "style") { element.nonce = STYLE_NONCE; }
      return element;
    };
    var setAttribute = Element.prototype.setAttribute;
    Element.prototype.setAttribute = function (name, value) {
      if (String(name).toLowerCase() === "style" && this.style) {
        this.style.cssText = String(value);
        return undefined;
      }
      return setAttribute.apply(this, arguments);
    };
  }

  function encodeText(text) {
    var bytes = new TextEncoder().encode(text);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) { binary += String.fromCharCode(bytes[i]); }
    return btoa(binary);
  }

  function encodeBinary(text) { // xterm's onBinary: one character per byte
    var binary = "";
    for (var i = 0; i < text.length; i++) { binary += String.fromCharCode(text.charCodeAt(i) & 255); }
    return btoa(binary);
  }

  function decode(data) {
    var binary = atob(data);
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) { bytes[i] = binary.charCodeAt(i); }
    return bytes;
  }

  function init() {
    var section = document.getElementById("terminal");
    if (!section) { return; }
    var openButton = document.getElementById("terminal-open");
    var closeButton = document.getElementById("terminal-close");
    var screen = document.getElementById("terminal-screen");
    var state = document.getElementById("terminal-state");
    var term = null, fit = null, socket = null, pinger = null, observer = null, resizeTimer = null;

    function say(text, isError) {
      state.textContent = text;
      state.classList.toggle("error", !!isError);
    }

    function sessionStatus() {
      var summary = document.getElementById("session-summary");
      return summary ? summary.getAttribute("data-status") : "";
    }

    function syncButtons() {
      // the same three states as templates/sessions/_terminal.html renders, re-read after every live update
      // (the status and the "agent lost" mark), so the note never says "opens once running" while it runs
      var running = RUNNING.indexOf(sessionStatus()) >= 0;
      var reachable = running && !document.getElementById("agent-lost-badge");
      openButton.disabled = !reachable || socket !== null;
      openButton.hidden = socket !== null;
      closeButton.hidden = socket === null;
      if (socket === null && term === null) {
        say(reachable ? "A shell in the main container of " + (section.getAttribute("data-session-name") || "the session") + "."
          : running ? "The terminal opens once the session's agent can be reached again."
            : "The terminal opens once the session is running.");
      }
    }

    if (typeof window.Terminal !== "function") {
      openButton.disabled = true;
      say("The terminal is not installed (xterm.js is missing from static/vendor/xterm: run scripts/run or scripts/test once).", true);
      return;
    }

    function send(frame) {
      if (socket && socket.readyState === WebSocket.OPEN) { socket.send(JSON.stringify(frame)); }
    }

    function fitNow() {
      if (!fit || !term) { return; }
      try { fit.fit(); } catch (err) { /* not visible yet */ }
    }

    function scheduleFit() {
      window.clearTimeout(resizeTimer);
      resizeTimer = window.setTimeout(fitNow, 80);
    }

    function teardown() {
      window.clearInterval(pinger);
      pinger = null;
      if (observer) { observer.disconnect(); observer = null; }
      window.removeEventListener("resize", scheduleFit);
      socket = null;
    }

    function open() {
      if (socket) { return; }
      screen.hidden = false;
      if (term) { term.dispose(); }
      allowRuntimeStyles();
      term = new window.Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000,
        fontFamily: "ui-monospace, SFMono-Regular, Menlo, Consolas, monospace" });
      fit = new window.FitAddon.FitAddon();
      term.loadAddon(fit);
      term.open(screen);
      fitNow();
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      var url = scheme + window.location.host + section.getAttribute("data-terminal-path") +
        "?rows=" + term.rows + "&cols=" + term.cols;
      say("Connecting…");
      var ws = new WebSocket(url);
      socket = ws;
      syncButtons();
      var ended = null;

      ws.onopen = function () {
        say("Connected to the session's main container.");
        term.focus();
        pinger = window.setInterval(function () { send({ type: "ping" }); }, PING_EVERY);
      };
      ws.onmessage = function (event) {
        var frame;
        try { frame = JSON.parse(event.data); } catch (err) { return; }
        if (frame.type === "out") {
          term.write(decode(frame.data));
        } else if (frame.type === "exit") {
          ended = "The shell exited" + (frame.exit_code === null || frame.exit_code === undefined ? "." : " with code " + frame.exit_code + ".");
        } else if (frame.type === "error") {
          ended = "The terminal ended: " + frame.message;
        }
      };
      ws.onclose = function (event) {
        if (socket !== ws) { return; }
        teardown();
        var refused = event.code === 1006 && !ended;
        say(ended || (refused ? "The terminal could not be opened (not allowed, or the server is unreachable)." :
          "The terminal closed (code " + event.code + ")."), refused || (ended && ended.indexOf("ended:") >= 0));
        term.options.cursorBlink = false;
        openButton.textContent = "Open a new terminal";
        syncButtons();
      };
      term.onData(function (data) { send({ type: "stdin", chars: encodeText(data) }); });
      term.onBinary(function (data) { send({ type: "stdin", chars: encodeBinary(data) }); });
      term.onResize(function (size) { send({ type: "resize", rows: size.rows, cols: size.cols }); });
      window.addEventListener("resize", scheduleFit);
      if (window.ResizeObserver) {
        observer = new ResizeObserver(scheduleFit);
        observer.observe(screen);
      }
    }

    function close() {
      if (socket) { socket.close(1000); }
    }

    openButton.addEventListener("click", open);
    closeButton.addEventListener("click", close);
    document.addEventListener("htmx:afterSwap", syncButtons); // the live status above may have changed
    window.addEventListener("beforeunload", close);
    syncButtons();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
