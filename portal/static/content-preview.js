// The email preview's width switch (desktop or phone), on the editor and the content page.
// Delegated from the document, and the chosen width is put back on every new preview, so it
// survives htmx re-rendering the preview panel as the author types.
(function () {
  "use strict";
  let mobile = false;

  function apply() {
    const frame = document.getElementById("preview-frame");
    if (frame) frame.classList.toggle("preview-mobile", mobile);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest("[data-preview-width]");
    if (button) {
      mobile = button.dataset.previewWidth === "mobile";
      apply();
    }
  });
  document.addEventListener("htmx:afterSettle", apply);
})();
