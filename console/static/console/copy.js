// Copy buttons: <button data-copy="element-id"> copies that field's value; the field
// selects itself on focus. A script file, not inline handlers: the CSP allows no inline code.
(function () {
  "use strict";
  document.querySelectorAll("[data-copy]").forEach((button) => {
    const field = document.getElementById(button.dataset.copy);
    if (!field) return;
    field.addEventListener("focus", () => field.select());
    button.addEventListener("click", () => {
      navigator.clipboard.writeText(field.value).then(() => { button.textContent = "Copied"; });
    });
  });
})();
