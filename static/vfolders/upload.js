/* Resumable uploads for the folder page (progressive enhancement: without this
 * script the form posts the files in one multipart request).
 *
 * Each file gets a token from the page's request-upload URL, then is sent with
 * tus 1.0 PATCH requests in chunks.  When the connection drops, the script waits
 * (with back-off), asks the server for the stored offset (HEAD) and carries on
 * from there; the token is kept in localStorage, so choosing the same file again
 * after a reload also resumes.  Plain JavaScript, no build step.
 *
 * Files come from the file input (keyboard users) or are dropped on the drop
 * zone.  Before anything is sent, each file's name is checked against the
 * listing on the page: when it exists, a dialog (#conflict-dialog) asks
 * whether to overwrite it, keep both (the new one becomes "name (1).ext") or
 * skip it; Escape skips; "do the same for the others" applies the choice to
 * the remaining conflicts of the batch. */
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

  function row(file, target) {
    var div = document.createElement("div");
    div.className = "file";
    div.dataset.name = target || file.name;
    var name = document.createElement("div");
    name.textContent = target && target !== file.name ? file.name + " \u2192 " + target : file.name;
    var bar = document.createElement("progress");
    bar.max = Math.max(file.size, 1);
    bar.value = 0;
    bar.setAttribute("aria-label", "upload of " + (target || file.name));
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
      skipped: function () { bar.value = 0; div.dataset.skipped = "1"; state.className = "state"; state.textContent = "Skipped: the name exists."; },
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

  async function uploadOne(file, target, ui) {
    var dir = form.dataset.path;
    var path = (dir && dir !== "." ? dir + "/" : "") + target;
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

  /* --- names that exist: the conflict prompt ------------------------------------------------- */

  var dialog = document.getElementById("conflict-dialog");

  function listedNames() {
    var names = {};
    document.querySelectorAll("#file-table tr[data-name]").forEach(function (tr) { names[tr.dataset.name] = true; });
    return names;
  }

  function keepBothName(name, taken) {  // "a.txt" -> "a (1).txt", "a (2).txt", ...; ".env" -> ".env (1)"
    var dot = name.lastIndexOf(".");
    var stem = dot > 0 ? name.slice(0, dot) : name, ext = dot > 0 ? name.slice(dot) : "";
    for (var n = 1; ; n++) {
      var candidate = stem + " (" + n + ")" + ext;
      if (!taken[candidate]) return candidate;
    }
  }

  function ask(name) {  // resolves to "overwrite", "keep" or "skip" (Escape, or no dialog support: skip)
    if (!dialog || typeof dialog.showModal !== "function") {
      return Promise.resolve(window.confirm(name + " exists already. Overwrite it? (Cancel skips it)") ? "overwrite" : "skip");
    }
    return new Promise(function (resolve) {
      var opener = document.activeElement;
      document.getElementById("conflict-text").textContent =
        "\u201c" + name + "\u201d is already in this directory. Overwrite it, keep both (the new file gets a numbered name), or skip it?";
      dialog.returnValue = "";
      function closed() {
        dialog.removeEventListener("close", closed);
        if (opener && opener.focus) opener.focus();
        resolve(dialog.returnValue === "overwrite" || dialog.returnValue === "keep" ? dialog.returnValue : "skip");
      }
      dialog.addEventListener("close", closed);
      dialog.showModal();
      document.getElementById("conflict-keep").focus();
    });
  }

  async function plan(files) {  // [{file, target}] with target null for the skipped ones, decided before sending
    var taken = listedNames(), all = null, result = [];
    var applyAll = document.getElementById("conflict-all");
    if (applyAll) applyAll.checked = false;
    for (var i = 0; i < files.length; i++) {
      var file = files[i], target = file.name;
      if (taken[target]) {
        var choice = all || await ask(target);
        if (!all && applyAll && applyAll.checked) all = choice;
        if (choice === "skip") target = null;
        else if (choice === "keep") target = keepBothName(target, taken);
      }
      if (target) taken[target] = true;
      result.push({file: file, target: target});
    }
    return result;
  }

  /* --- one batch: from the input or the drop zone ---------------------------------------------- */

  var busy = false;

  async function uploadAll(files) {
    if (busy || !files.length) return;
    busy = true;
    button.disabled = true;
    box.textContent = "";
    var failed = false, sent = 0;
    var todo = await plan(files);
    for (var i = 0; i < todo.length; i++) {
      var ui = row(todo[i].file, todo[i].target);
      if (!todo[i].target) { ui.skipped(); continue; }
      try { await uploadOne(todo[i].file, todo[i].target, ui); sent += 1; }
      catch (err) {
        failed = true;
        ui.say("Failed: " + (err.message || err), true);
      }
    }
    busy = false;
    button.disabled = false;
    if (!failed && sent) window.location.reload();  // the listing now shows the files
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    uploadAll(Array.prototype.slice.call(input.files));
  });

  var zone = document.getElementById("drop-zone");
  if (zone) {
    zone.hidden = false;
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      var files = event.dataTransfer && event.dataTransfer.files;
      if (files && files.length) uploadAll(Array.prototype.slice.call(files));
    });
  }
})();
