/* Resumable uploads for the folder page (progressive enhancement: without this
 * script the form posts the files in one multipart request).
 *
 * Each file gets a token from the page's request-upload URL, then is sent with
 * tus 1.0 PATCH requests in chunks.  When the connection drops, the script waits
 * (with back-off), asks the server for the stored offset (HEAD) and carries on
 * from there; the token is kept in localStorage, so choosing the same file again
 * after a reload also resumes.  Plain JavaScript, no build step. */
(function () {
  "use strict";
  var form = document.getElementById("upload-form");
  if (!form || !window.fetch || !window.Blob || !Array.prototype.forEach) return;

  var CHUNK = parseInt(form.dataset.chunk, 10) || 4 * 1024 * 1024;
  var box = document.getElementById("upload-progress");
  var input = form.querySelector("input[type=file]");
  var button = form.querySelector("button[type=submit]");
  var csrf = form.querySelector("input[name=csrfmiddlewaretoken]").value;

  function sleep(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function Fatal(message) { this.message = message; }

  function storageKey(file, path) {
    return ["vf-upload", form.dataset.folder, path, file.size, file.lastModified].join(":");
  }

  function remember(key, value) {
    try { if (value) localStorage.setItem(key, JSON.stringify(value)); else localStorage.removeItem(key); }
    catch (e) { /* private mode: resuming after a reload is then not possible */ }
  }

  function recall(key) {
    try { return JSON.parse(localStorage.getItem(key) || "null"); } catch (e) { return null; }
  }

  function row(file) {
    var div = document.createElement("div");
    div.className = "file";
    var name = document.createElement("div");
    name.textContent = file.name;
    var bar = document.createElement("progress");
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    var state = document.createElement("div");
    state.className = "state";
    div.appendChild(name); div.appendChild(bar); div.appendChild(state);
    box.appendChild(div);
    return {
      progress: function (offset) {
        bar.value = file.size ? offset : 1;
        var pct = file.size ? Math.floor(100 * offset / file.size) : 100;
        state.className = "state";
        state.textContent = pct + "% (" + offset + " of " + file.size + " bytes)";
      },
      say: function (text, bad) { state.className = bad ? "state bad" : "state"; state.textContent = text; },
      done: function () { bar.value = bar.max; div.dataset.done = "1"; state.className = "state"; state.textContent = "Uploaded."; }
    };
  }

  async function problemText(resp) {
    try { var body = await resp.json(); return body.msg || body.title || ("HTTP " + resp.status); }
    catch (e) { return "HTTP " + resp.status; }
  }

  async function newToken(path, size) {
    var resp = await fetch(form.dataset.requestUrl, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify({path: path, size: size})
    });
    if (!resp.ok) throw new Fatal(await problemText(resp));
    var info = await resp.json();
    info.expires = Date.now() + Math.max(0, (info.expires_in || 3600) - 60) * 1000;
    return info;
  }

  function tusUrl(info) {
    return info.url + (info.url.indexOf("?") >= 0 ? "&" : "?") + "token=" + encodeURIComponent(info.token);
  }

  async function storedOffset(url) {
    var resp = await fetch(url, {method: "HEAD", headers: {"Tus-Resumable": "1.0.0"}, cache: "no-store"});
    if (resp.status !== 200) throw new Fatal("the upload can no longer be resumed (HTTP " + resp.status + ")");
    return parseInt(resp.headers.get("Upload-Offset"), 10) || 0;
  }

  async function uploadOne(file) {
    var dir = form.dataset.path;
    var path = (dir && dir !== "." ? dir + "/" : "") + file.name;
    var ui = row(file);
    var key = storageKey(file, path);
    var info = recall(key);
    var offset = 0;
    if (info && info.expires > Date.now()) {
      try { offset = await storedOffset(tusUrl(info)); ui.say("Resuming at " + offset + " bytes"); }
      catch (e) { info = null; }
    } else {
      info = null;
    }
    if (!info) {
      info = await newToken(path, file.size);
      remember(key, info);
      offset = 0;
    }
    var url = tusUrl(info);
    var failures = 0;
    ui.progress(offset);
    while (offset < file.size) {
      try {
        var resp = await fetch(url, {
          method: "PATCH",
          headers: {"Tus-Resumable": "1.0.0", "Upload-Offset": String(offset),
                    "Content-Type": "application/offset+octet-stream"},
          body: file.slice(offset, Math.min(offset + CHUNK, file.size))
        });
        if (resp.status === 204) {
          offset = parseInt(resp.headers.get("Upload-Offset"), 10);
          failures = 0;
          ui.progress(offset);
          continue;
        }
        if (resp.status === 409) {  // we and the server disagree on the offset: ask it
          offset = await storedOffset(url);
          continue;
        }
        remember(key, null);
        throw new Fatal(await problemText(resp));
      } catch (err) {
        if (err instanceof Fatal) throw err;
        failures += 1;  // a network error: the connection dropped
        var wait = Math.min(30000, 500 * Math.pow(2, failures));
        ui.say("Connection lost; retrying in " + Math.round(wait / 1000) + " s (" + offset + " bytes stored)", true);
        await sleep(wait);
        try { offset = await storedOffset(url); } catch (e2) { if (e2 instanceof Fatal) throw e2; }
      }
    }
    remember(key, null);
    ui.done();
  }

  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (!input.files.length) return;
    button.disabled = true;
    box.textContent = "";
    var failed = false;
    var files = Array.prototype.slice.call(input.files);
    for (var i = 0; i < files.length; i++) {
      try { await uploadOne(files[i]); }
      catch (err) {
        failed = true;
        var last = box.lastChild && box.lastChild.querySelector(".state");
        if (last) { last.className = "state bad"; last.textContent = "Failed: " + (err.message || err); }
      }
    }
    button.disabled = false;
    if (!failed) window.location.reload();  // the listing now shows the files
  });
})();
