// Copy buttons: <button data-copy="element-id"> copies that field's value (or, for an
// element that is no form field, such as a code example, its text); a field selects itself
// on focus. A script file, not inline handlers: the CSP allows no inline code.
(function () {
  "use strict";
  document.querySelectorAll("[data-copy]").forEach((button) => {
    const field = document.getElementById(button.dataset.copy);
    if (!field) return;
    if (typeof field.select === "function") field.addEventListener("focus", () => field.select());
    button.addEventListener("click", () => {
      const text = "value" in field ? field.value : field.textContent;
      navigator.clipboard.writeText(text).then(() => { button.textContent = "Copied"; });
    });
  });
})();
