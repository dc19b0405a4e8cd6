// The block editor's behaviour on top of the server-rendered form: drag to reorder (SortableJS),
// rich text in text blocks (Squire), and the variable picker. Everything is initialised from
// htmx.onLoad, so blocks the server swaps in get the same behaviour. No inline styles or
// handlers: the page runs under a strict Content-Security-Policy.
(function () {
  "use strict";

  function form() {
    return document.getElementById("draft-form");
  }

  function changed(element) {
    element.dispatchEvent(new Event("input", { bubbles: true }));
    element.dispatchEvent(new Event("change", { bubbles: true }));
  }

  // --- drag to reorder: a dropped block takes its new section and column -----------------------
  function initSortable(root) {
    if (!window.Sortable) return;
    root.querySelectorAll(".block-column").forEach((column) => {
      if (column.dataset.sortable) return;
      column.dataset.sortable = "1";
      window.Sortable.create(column, {
        group: "blocks",
        handle: ".block-handle",
        draggable: ".block",
        animation: 120,
        // pointer events rather than native drag and drop: the same on every browser and input
        forceFallback: true,
        onEnd(event) {
          const block = event.item;
          const target = event.to;
          block.querySelector("[data-block-section]").value = target.dataset.section;
          block.querySelector("[data-block-column]").value = target.dataset.column;
          // keep the "add block" picker last in its column
          const add = target.querySelector(".block-add");
          if (add) target.appendChild(add);
          changed(block.querySelector("[data-block-column]"));
        },
      });
    });
  }

  // --- rich text: Squire on a contenteditable area; the textarea keeps the value the form posts -
  let lastField = null;
  let lastEditor = null;

  function sanitise(html) {
    const fragment = window.DOMPurify.sanitize(html, {
      ALLOWED_TAGS: ["p", "br", "b", "strong", "i", "em", "u", "a", "ul", "ol", "li", "div", "span"],
      ALLOWED_ATTR: ["href"],
      RETURN_DOM_FRAGMENT: true,
    });
    return document.importNode(fragment, true);
  }

  function initRichText(root) {
    if (!window.Squire || !window.DOMPurify) return;
    root.querySelectorAll("textarea[data-rich-text]").forEach((textarea) => {
      if (textarea.dataset.ready) return;
      textarea.dataset.ready = "1";
      const toolbar = document.createElement("div");
      toolbar.className = "rich-text-toolbar";
      toolbar.setAttribute("role", "toolbar");
      const area = document.createElement("div");
      area.className = "rich-text-area";
      area.setAttribute("role", "textbox");
      area.setAttribute("aria-multiline", "true");
      area.setAttribute("aria-label", textarea.dataset.label || "");
      textarea.classList.add("visually-hidden");
      textarea.setAttribute("tabindex", "-1");
      textarea.after(toolbar, area);
      const editor = new window.Squire(area, { blockTag: "P", sanitizeToDOMFragment: sanitise });
      editor.setHTML(textarea.value);
      editor.addEventListener("input", () => {
        textarea.value = editor.getHTML();
        changed(textarea);
      });
      editor.addEventListener("focus", () => {
        lastEditor = editor;
        lastField = null;
      });
      const actions = {
        bold: () => (editor.hasFormat("B") ? editor.removeBold() : editor.bold()),
        italic: () => (editor.hasFormat("I") ? editor.removeItalic() : editor.italic()),
        link: () => {
          const url = window.prompt(textarea.dataset.linkPrompt || "URL", "https://");
          if (url) editor.makeLink(url);
        },
        bullets: () => editor.makeUnorderedList(),
        numbers: () => editor.makeOrderedList(),
      };
      Object.keys(actions).forEach((name) => {
        const button = document.createElement("button");
        button.type = "button";
        button.className = "button secondary small";
        button.textContent = textarea.dataset[name + "Label"] || name;
        button.addEventListener("click", () => {
          actions[name]();
          editor.focus();
        });
        toolbar.appendChild(button);
      });
    });
  }

  // --- variable picker: insert where the author was typing ---------------------------------------
  document.addEventListener("focusin", (event) => {
    const target = event.target;
    if (target.closest && target.closest("#draft-form") && target.matches("input[type=text], textarea")) {
      lastField = target;
      lastEditor = null;
    }
  });

  document.addEventListener("change", (event) => {
    const picker = event.target.closest ? event.target.closest("[data-variable-picker]") : null;
    if (!picker || !picker.value) return;
    const expression = picker.value;
    picker.value = "";
    if (lastEditor) {
      lastEditor.insertPlainText(expression);
      lastEditor.focus();
    } else if (lastField) {
      lastField.setRangeText(expression, lastField.selectionStart, lastField.selectionEnd, "end");
      lastField.focus();
      changed(lastField);
    }
  });

  function init(root) {
    if (!form()) return;
    initSortable(root);
    initRichText(root);
  }

  // A step in the block editor (add, delete, undo…) changes what the preview shows.
  document.addEventListener("htmx:afterSettle", (event) => {
    if (event.target && event.target.id === "block-editor") {
      document.body.dispatchEvent(new CustomEvent("blocks-changed", { bubbles: true }));
    }
  });

  if (window.htmx) {
    window.htmx.onLoad(init);
  } else {
    document.addEventListener("DOMContentLoaded", () => init(document));
  }
})();
