// The session create form (templates/sessions/create.html): choosing a preset fills the amount
// fields with its slots (each preset's label carries them in data-inputs: field name -> value),
// and typing an amount switches the choice to "Custom".  The server uses the chosen preset's
// own slots either way (sessions/forms.py); this only shows them.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("create-session");
  if (!form) {
    return;
  }
  const custom = document.getElementById("preset-custom");
  const amounts = Array.from(form.querySelectorAll("#custom-slots input[data-slot]"));

  function fill(label) {
    let inputs = {};
    try {
      inputs = JSON.parse(label.dataset.inputs || "{}");
    } catch (error) {
      return;
    }
    for (const input of amounts) {
      if (Object.prototype.hasOwnProperty.call(inputs, input.name)) {
        input.value = inputs[input.name];
      }
    }
  }

  form.querySelectorAll('input[type="radio"][name="preset"]').forEach((radio) => {
    radio.addEventListener("change", () => {
      const label = radio.closest("label[data-preset]");
      if (radio.checked && radio.value && label) {
        fill(label);
      }
    });
  });
  for (const input of amounts) {
    input.addEventListener("input", () => {
      if (custom && !custom.checked) {
        custom.checked = true;
      }
    });
  }
  const chosen = form.querySelector('input[type="radio"][name="preset"]:checked');
  if (chosen && chosen.value) {
    const label = chosen.closest("label[data-preset]");
    if (label) {
      fill(label);
    }
  }
});
