// The session page's "Files" card (templates/sessions/_files.html): refuses a file over the upload limit
// beside the field before it is sent (the server checks it again), and says the upload is under way.
(function () {
  "use strict";
  const form = document.getElementById("files-upload");
  if (!form) return;
  const file = document.getElementById("files-upload-file");
  const send = document.getElementById("files-upload-send");
  const error = document.getElementById("files-upload-error");
  const limit = Number(file.dataset.maxSize || 0);

  function human(bytes) {
    const units = ["bytes", "KB", "MB", "GB", "TB"];
    let value = bytes, unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return unit ? `${value.toFixed(1)} ${units[unit]}` : `${value} bytes`;
  }

  function check() {
    const chosen = file.files && file.files[0];
    const tooLarge = chosen && limit && chosen.size > limit;
    const message = tooLarge ? `${chosen.name} is ${human(chosen.size)}, more than the limit of ${human(limit)}.` : "";
    file.setCustomValidity(message);
    error.textContent = message;
    error.hidden = !message;
    if (message) {
      file.setAttribute("aria-invalid", "true");
      file.setAttribute("aria-describedby", "files-upload-error files-upload-help");
    } else {
      file.removeAttribute("aria-invalid");
      file.setAttribute("aria-describedby", "files-upload-help");
    }
    for (const old of form.querySelectorAll("#files-message")) old.remove();  // the last upload's outcome
    return !message;
  }

  file.addEventListener("change", check);
  form.addEventListener("submit", (event) => {
    if (!check()) {
      event.preventDefault();
      file.focus();
      return;
    }
    send.disabled = true;
    send.textContent = "Uploading…";
  });
})();
