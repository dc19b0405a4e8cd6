// Behaviour the templates ask for with data- attributes: no inline script or handler anywhere,
// so that the Content-Security-Policy can forbid them. Delegated from the document, so that
// fragments htmx swaps in later behave the same.
"use strict";

// A destructive action asks first: a form or a button with data-confirm="question".
document.addEventListener(
  "submit",
  function (event) {
    const form = event.target;
    const button = event.submitter;
    const question =
      (button && button.getAttribute("data-confirm")) || form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  },
  true
);
