// Kakitome admin UI: the few behaviours that need script. Everything works without it.
// - "select all" checkboxes: <input type="checkbox" data-select-all="NAME">
// - copy buttons: <button data-copy="INPUT-ID">
// - htmx requests carry the page's CSRF token (X-CSRF-Token) for non-GET requests.
"use strict";
document.addEventListener("change", function (event) {
  var box = event.target;
  if (!(box instanceof HTMLInputElement) || !box.dataset.selectAll) return;
  var form = box.form || document;
  form.querySelectorAll('input[type="checkbox"][name="' + box.dataset.selectAll + '"]')
    .forEach(function (other) { other.checked = box.checked; });
});
document.addEventListener("click", function (event) {
  var button = event.target;
  if (!(button instanceof HTMLElement) || !button.dataset.copy) return;
  var input = document.getElementById(button.dataset.copy);
  if (!input) return;
  input.select();
  if (navigator.clipboard) { navigator.clipboard.writeText(input.value); }
  else { document.execCommand("copy"); }
  button.setAttribute("aria-live", "polite");
});
document.addEventListener("htmx:configRequest", function (event) {
  var field = document.querySelector('input[name="csrf_token"]');
  if (field && event.detail.verb !== "get") {
    event.detail.headers["X-CSRF-Token"] = field.value;
  }
});
