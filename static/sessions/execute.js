// The session page's "Run code" card (templates/sessions/_execute.html): POSTs the code to the
// console view with the CSRF token, prints each answer's console records as they come, loops
// "continue" while the run goes on and asks for a line when the run waits for input.
(function () {
  "use strict";
  const card = document.getElementById("execute");
  if (!card) return;
  const url = card.dataset.executeUrl;
  const form = document.getElementById("execute-form");
  const code = document.getElementById("execute-code");
  const run = document.getElementById("execute-run");
  const state = document.getElementById("execute-state");
  const output = document.getElementById("execute-output");
  const inputForm = document.getElementById("execute-input-form");
  const input = document.getElementById("execute-input");
  const token = form.querySelector("input[name=csrfmiddlewaretoken]").value;
  let runId = null;

  function show(records) {
    for (const [stream, text] of records || []) {
      const span = document.createElement("span");
      span.className = stream === "stderr" ? "stderr" : "stdout";
      span.textContent = text;
      output.appendChild(span);
    }
    output.scrollTop = output.scrollHeight;
  }

  async function ask(body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": token},
      body: JSON.stringify(body),
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.msg || data.title || `HTTP ${response.status}`);
    return data.result;
  }

  async function loop(body) {
    for (;;) {
      const result = await ask(body);
      runId = result.runId;
      show(result.console);
      if (result.status === "finished") {
        state.textContent = `Finished (exit code ${result.exitCode}).`;
        return;
      }
      if (result.status === "waiting-input") {
        state.textContent = "Waiting for input.";
        inputForm.hidden = false;
        input.type = result.options && result.options.is_password ? "password" : "text";
        input.focus();
        return;  // the input form continues the loop
      }
      state.textContent = "Running…";
      body = {mode: "continue", runId: runId, code: ""};
    }
  }

  async function start(body) {
    run.disabled = true;
    try {
      await loop(body);
    } catch (error) {
      // the refusal (not running, agent lost, unsupported runtime) beside the button, not as the code's output
      state.textContent = `Could not run: ${error.message}`;
      state.classList.add("error");
      state.setAttribute("role", "alert");
      output.hidden = !output.textContent;
    } finally {
      run.disabled = !inputForm.hidden;
    }
  }

  function running() {
    state.classList.remove("error");
    state.setAttribute("role", "status");
    state.textContent = "Running…";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (run.disabled) return;
    output.hidden = false;
    output.textContent = "";
    inputForm.hidden = true;
    running();
    start({mode: "query", runId: null, code: code.value});
  });
  inputForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const line = input.value;
    input.value = "";
    inputForm.hidden = true;
    show([["stdout", `${input.type === "password" ? "" : line}\n`]]);
    running();
    start({mode: "input", runId: runId, code: line});
  });
  // Ctrl+Enter (Cmd+Enter) in the code runs it, as in notebooks
  code.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
})();
