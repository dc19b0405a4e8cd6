// The campaign canvas: steps dragged by their handle (SortableJS) move where they are dropped,
// on their own path or onto another one. The ↑ and ↓ buttons do the same without a mouse;
// this file only adds the drag. Initialised from htmx.onLoad, so the canvas the server swaps
// in after each change gets the same behaviour. No inline script or style (strict CSP).
(function () {
  "use strict";

  function placeOf(item) {
    // The index among the steps of the list it was dropped in ("+" edges are not steps).
    const list = item.parentElement;
    const steps = Array.from(list.children).filter((el) => el.classList.contains("canvas-node"));
    return {
      parent: list.dataset.parent || "",
      branch: list.dataset.branch || "",
      index: String(steps.indexOf(item)),
    };
  }

  function init(root) {
    if (!window.Sortable || !window.htmx) return;
    const scope = root.querySelector ? root : document;
    const boards = scope.matches && scope.matches(".canvas-board") ? [scope] : scope.querySelectorAll(".canvas-board");
    boards.forEach((board) => {
      if (board.dataset.draggable !== "true") return;
      board.querySelectorAll("ol.canvas-path").forEach((list) => {
        if (list.dataset.sortable) return;
        list.dataset.sortable = "1";
        window.Sortable.create(list, {
          group: "campaign-steps",
          handle: ".canvas-handle",
          draggable: ".canvas-node",
          animation: 120,
          fallbackOnBody: true,
          swapThreshold: 0.65,
          // pointer events rather than native drag and drop: the same on every browser and input
          forceFallback: true,
          onEnd(event) {
            const item = event.item;
            const place = placeOf(item);
            window.htmx.ajax("POST", item.dataset.moveUrl, {
              source: board,
              target: "#campaign-canvas",
              swap: "outerHTML",
              values: place,
            });
          },
        });
      });
    });
  }

  if (window.htmx) {
    window.htmx.onLoad(init);
  } else {
    document.addEventListener("DOMContentLoaded", () => init(document));
  }
})();
