// Kakitome admin UI, domains/checker/webhooks pages: feedback on copy buttons.
// The copying itself is kakitome.js's (data-copy); this only says "Copied" for 2 s.
"use strict";
document.addEventListener("click", function (event) {
  var button = event.target;
  if (!(button instanceof HTMLElement) || !button.dataset.copy || !button.dataset.copied) return;
  var label = button.dataset.label || button.textContent;
  button.dataset.label = label;
  button.textContent = button.dataset.copied;
  button.classList.add("copied");
  window.setTimeout(function () {
    button.textContent = label;
    button.classList.remove("copied");
  }, 2000);
});
// File inputs with data-read-into="TEXTAREA-ID": the chosen file's text goes into the
// textarea, which the form posts (with its CSRF token) like any other field.
document.addEventListener("change", function (event) {
  var input = event.target;
  if (!(input instanceof HTMLInputElement) || !input.dataset.readInto || !input.files) return;
  var target = document.getElementById(input.dataset.readInto);
  var file = input.files[0];
  if (!target || !file) return;
  file.text().then(function (text) { target.value = text; });
});
