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

// Keyboard and screen-reader flow after an update (WCAG 2.4.3, 4.1.3). The server marks, the
// browser moves: no page has code of its own.
// - Focus. After an htmx swap started by the person (the focus was in the element that made
//   the request, or the whole page was replaced): on a 422 the first field marked
//   aria-invalid="true"; else an element the server marked data-focus-after-swap, or the
//   element the URL fragment names (a redirect after a POST names what it changed:
//   "#step-12"); else, if the focus was lost with the old content, the same control in the
//   new content (same id, or same name and value), or the swapped container itself (so a
//   removal lands on the list it was removed from). A full page load after a plain form post
//   focuses the element its URL fragment names the same way.
// - Announcements. Every element marked data-announce (the flashed messages, a message in a
//   fragment) is read into the one polite live region of base.html (#announcer) after a swap
//   or a page load; a request that fails without an answer to show says so there and in
//   #flash, in the words base.html gives it.
(function () {
  const FOCUSABLE =
    "a[href], button, input:not([type=hidden]), select, textarea, summary, [tabindex]";
  let announceTimer = null;

  function focusOn(element) {
    if (!element || !element.isConnected) return false;
    if (!element.matches(FOCUSABLE)) element.setAttribute("tabindex", "-1");
    element.focus();
    return document.activeElement === element;
  }

  function focusLost() {
    const active = document.activeElement;
    return !active || active === document.body || !active.isConnected;
  }

  function byFragment(name) {
    if (!name) return null;
    try {
      return document.getElementById(decodeURIComponent(name.replace(/^#/, "")));
    } catch (error) {
      return null;
    }
  }

  function announce(texts) {
    const region = document.getElementById("announcer");
    const text = texts
      .map(function (t) {
        return (t || "").replace(/\s+/g, " ").trim();
      })
      .filter(Boolean)
      .join(" ");
    if (!region || !text) return;
    region.textContent = "";
    // Written a moment later, so that a region swapped in with a new page is already in the
    // accessibility tree when its text changes: screen readers read changes, not contents.
    clearTimeout(announceTimer);
    announceTimer = setTimeout(function () {
      region.textContent = text;
    }, 150);
  }

  function announcementsIn(root) {
    const found = Array.from(root.querySelectorAll("[data-announce]"));
    if (root.matches && root.matches("[data-announce]")) found.unshift(root);
    return found.map(function (element) {
      return element.textContent;
    });
  }

  // What identifies a control across a re-render: its id, else its name with its value.
  function signature(element) {
    if (!element || element === document.body) return null;
    if (element.id) return { id: element.id };
    if (element.name) return { name: element.name, value: element.value, tag: element.tagName };
    return null;
  }

  function sameControl(sig, within) {
    if (!sig) return null;
    if (sig.id) return document.getElementById(sig.id);
    return (
      Array.from(within.querySelectorAll(sig.tag)).find(function (element) {
        return element.name === sig.name && (sig.tag === "SELECT" || element.value === sig.value);
      }) || null
    );
  }

  function swappedContainer(target) {
    if (target === document.body) return document.getElementById("main") || target;
    if (target.isConnected) return target;
    return target.id ? document.getElementById(target.id) : null;
  }

  // Keyed by the element that made the request, so that a poll elsewhere forgets nothing.
  const focusAtRequest = new WeakMap();

  document.addEventListener("htmx:beforeRequest", function (event) {
    const source = event.detail.elt;
    const target = event.detail.target;
    const active = document.activeElement;
    const byPerson =
      source === document.body ||
      (active && active !== document.body && (source.contains(active) || (target && target.contains(active))));
    if (byPerson) focusAtRequest.set(source, signature(active));
    else focusAtRequest.delete(source);
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    const detail = event.detail;
    const container = swappedContainer(detail.target) || document.body;
    const main = document.getElementById("main");
    announce(announcementsIn(container === main ? document.body : container));
    // The event fires on the new content; the element that asked is in the request's config.
    const source = detail.requestConfig ? detail.requestConfig.elt : detail.elt;
    if (!focusAtRequest.has(source)) return;
    const control = focusAtRequest.get(source);
    focusAtRequest.delete(source);
    if (detail.xhr && detail.xhr.status === 422) {
      const invalid = container.querySelector('[aria-invalid="true"]');
      const error = container.querySelector(".field-error, .flash-error, [role=alert]");
      if (focusOn(invalid) || focusOn(error)) return;
    }
    const marked = container.querySelector("[data-focus-after-swap]");
    if (marked) {
      marked.removeAttribute("data-focus-after-swap");
      if (focusOn(marked)) return;
    }
    if (focusOn(byFragment(detail.pathInfo && detail.pathInfo.anchor))) return;
    if (focusLost()) focusOn(sameControl(control, container)) || focusOn(container);
  });

  function failed(message) {
    const flash = document.getElementById("flash");
    if (!message) return;
    if (flash) {
      const line = document.createElement("p");
      line.className = "flash flash-error";
      line.textContent = message;
      flash.replaceChildren(line);
    }
    announce([message]);
  }

  document.addEventListener("htmx:responseError", function (event) {
    const region = document.getElementById("announcer");
    const status = event.detail.xhr ? event.detail.xhr.status : 500;
    failed(region && region.getAttribute(status >= 500 ? "data-failed" : "data-refused"));
  });

  document.addEventListener("htmx:sendError", function () {
    const region = document.getElementById("announcer");
    failed(region && region.getAttribute("data-unreachable"));
  });

  function onLoad() {
    announce(announcementsIn(document.body));
    if (location.hash && !document.querySelector("[autofocus]")) focusOn(byFragment(location.hash));
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", onLoad);
  else onLoad();
})();
