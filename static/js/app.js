// Experiment Desk: the little behaviour htmx does not give us. No inline scripts (CSP).
"use strict";

// One polite live region (#announcer in base.html) sits outside every block htmx
// replaces, so what it says is read out; a region swapped in with new content is not.
function announce(text) {
  const region = document.getElementById("announcer");
  if (!region) return;
  region.textContent = "";
  // A change a moment after clearing is announced even when the text repeats.
  setTimeout(() => { region.textContent = text; }, 60);
}

// The page's one notice. Raised by the server with HX-Trigger: {"showToast": {"message": "..."}}.
// A new notice takes the place of the last, so notices never stack up over the page. It goes
// by itself after a while (never while pointed at or focused), or at Dismiss; what it says is
// also shown where it happened (a row's chip or line), so nothing is lost with it.
const TOAST_MS = 8000;
function dismissLater(toast) {
  setTimeout(() => {
    if (toast.matches(":hover, :focus-within")) dismissLater(toast);
    else toast.remove();
  }, TOAST_MS);
}
document.addEventListener("showToast", (event) => {
  const box = document.getElementById("toasts");
  const text = event.detail && event.detail.message;
  if (!box || !text) return;
  hideSlow();
  const toast = document.createElement("div");
  toast.className = "toast";
  const said = document.createElement("p");
  said.textContent = text; // text, never HTML
  const close = document.createElement("button");
  close.type = "button";
  close.className = "toast-close";
  close.textContent = "Dismiss";
  close.addEventListener("click", () => toast.remove());
  toast.append(said, close);
  box.replaceChildren(toast);
  dismissLater(toast);
});

document.addEventListener("click", (event) => {
  // An empty star asks for an optional note first (#star-note-dialog), then stars with it.
  const star = event.target.closest(".star-toggle .star-button[aria-pressed=false]");
  const noteDialog = document.getElementById("star-note-dialog");
  if (star && noteDialog && typeof noteDialog.showModal === "function") {
    event.preventDefault();
    const starForm = star.closest("form");
    const form = noteDialog.querySelector("form");
    form.action = starForm.action;
    form.dataset.star = starForm.id;
    for (const name of ["next", "strip"]) {
      const source = starForm.querySelector(`input[name=${name}]`);
      form.querySelector(`input[name=${name}]`).value = source ? source.value : "";
    }
    noteDialog.querySelector("[data-star-name]").textContent = star.dataset.name || "";
    form.querySelector("textarea").value = "";
    noteDialog.showModal();
    form.querySelector("textarea").focus();
    return;
  }
  // <button data-open-dialog="ID"> opens <dialog id="ID">; data-close-dialog closes its dialog.
  const opener = event.target.closest("[data-open-dialog]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.openDialog);
    if (dialog && typeof dialog.showModal === "function") {
      event.preventDefault();
      dialog.showModal();
    }
    return;
  }
  const closer = event.target.closest("[data-close-dialog]");
  if (closer) {
    const dialog = closer.closest("dialog");
    if (dialog) {
      event.preventDefault();
      dialog.close();
      showPressOnItsWay(closer.closest("form[data-sending]"));
    }
    return;
  }
  // <button data-copy="TEXT"> puts TEXT on the clipboard (an experiment's id) and says so.
  // Where the clipboard API is missing or refused (a plain http:// address is no secure
  // context), the id is shown beside the button and selected, ready for Ctrl+C.
  const copy = event.target.closest("[data-copy]");
  if (copy) {
    const text = copy.dataset.copy;
    const selectIt = () => {
      let shown = copy.parentElement.querySelector(".copy-id-text");
      if (!shown) {
        shown = document.createElement("code");
        shown.className = "copy-id-text";
        shown.textContent = text;
        copy.after(shown);
      }
      const range = document.createRange();
      range.selectNodeContents(shown);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      let copied = false;
      try { copied = document.execCommand("copy"); } catch (error) { copied = false; }
      announce(copied ? "Copied the id to the clipboard." : "The id is selected: press Ctrl+C to copy it.");
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(() => announce("Copied the id to the clipboard."), selectIt);
    } else {
      selectIt();
    }
    return;
  }
  // <button data-fill-now="ID"> puts the current UTC minute into <input id="ID">.
  const now = event.target.closest("[data-fill-now]");
  if (now) {
    const input = document.getElementById(now.dataset.fillNow);
    if (input) {
      input.value = new Date().toISOString().slice(0, 16).replace("T", " ");
      input.dispatchEvent(new Event("input", { bubbles: true }));
      input.focus();
    }
  }
});

// --- A press that is already on its way ------------------------------------------------
// A force conclude cannot be called back once sent. While its request is in flight the
// dialog's Cancel says it only closes; closing then shows, where the answer will land
// (the form's hx-target), that the press is on its way. The answer replaces that line.
document.addEventListener("htmx:beforeRequest", (event) => {
  const labels = event.detail.elt.querySelectorAll("[data-in-flight-text]");
  if (!labels.length) return;
  event.detail.elt.setAttribute("data-sending", "");
  labels.forEach((el) => { el.textContent = el.dataset.inFlightText; });
});
document.addEventListener("htmx:afterRequest", (event) => event.detail.elt.removeAttribute("data-sending"));

function showPressOnItsWay(form) {
  if (!form) return;
  const target = document.querySelector(form.getAttribute("hx-target"));
  const line = target && target.querySelector("[data-press-on-its-way]");
  if (line) {
    line.hidden = false;
    announce(line.textContent.trim());
  }
}

// --- Busy states -----------------------------------------------------------------------
// An element (or an ancestor) with data-busy="Concluding…" has that announced when its
// request starts. After a second without an answer a visible notice says what we wait
// for (data-slow on the element or an ancestor, else a plain "Still loading…").
const SLOW_AFTER_MS = 1000;
let slowTimer = null;

function showSlow(text) {
  const notice = document.getElementById("slow-notice");
  if (!notice) return;
  notice.querySelector("[data-slow-text]").textContent = text;
  notice.hidden = false;
  announce(text);
}

function hideSlow() {
  clearTimeout(slowTimer);
  slowTimer = null;
  const notice = document.getElementById("slow-notice");
  if (notice) notice.hidden = true;
}

function startWaiting(source) {
  hideSlow();
  const slow = source && source.closest("[data-slow]");
  const text = slow ? slow.dataset.slow : "Still loading…";
  slowTimer = setTimeout(() => showSlow(text), SLOW_AFTER_MS);
}

document.addEventListener("htmx:beforeRequest", (event) => {
  const elt = event.detail.elt;
  if (elt.hasAttribute("data-poll")) return; // a background check, nobody is waiting on it
  const busy = elt.closest("[data-busy]");
  if (busy) announce(busy.dataset.busy);
  startWaiting(elt);
});
document.addEventListener("htmx:afterRequest", (event) => {
  if (!event.detail.elt.hasAttribute("data-poll")) hideSlow();
});

// A full page load of a screen that reads Mixpanel shows nothing new until Mixpanel
// answers; the notice says so after a second. Same-origin links and GET forms only.
// The home page reads every workspace's list too.
const MIXPANEL_PAGE = /^\/(w\/\d+\/(experiments\/[^/]+\/)?)?$/;
const MIXPANEL_WAIT = "Waiting for Mixpanel… Experiments are read from it as the page opens; this can take a few seconds.";
function waitForPage(url) {
  if (url.origin !== window.location.origin) return;
  // A link to a place on this same page (the skip link) loads nothing.
  if (url.pathname === window.location.pathname && url.search === window.location.search && url.hash) return;
  const text = MIXPANEL_PAGE.test(url.pathname) ? MIXPANEL_WAIT : "Still loading…";
  hideSlow();
  slowTimer = setTimeout(() => showSlow(text), SLOW_AFTER_MS);
}
document.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  if (!link || event.defaultPrevented || link.hasAttribute("hx-get") || link.hasAttribute("download")) return;
  if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey || link.target) return;
  waitForPage(new URL(link.href, window.location.href));
});
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (form.matches("[data-star-note]") && form.dataset.star && window.htmx) {
    // The star with its note, through htmx like the star itself: the star swaps in place.
    event.preventDefault();
    const target = document.getElementById(form.dataset.star);
    form.closest("dialog").close();
    if (target) target.querySelector("button").focus();
    window.htmx.ajax("POST", form.action, { source: form, target: target, swap: "outerHTML" });
    return;
  }
  if (event.defaultPrevented || form.hasAttribute("hx-get") || form.hasAttribute("hx-post")) return;
  waitForPage(new URL(form.action, window.location.href));
});
// Back to a page kept in the browser's memory: nothing is loading any more.
window.addEventListener("pageshow", () => { hideSlow(); followView(); });

// --- Focus and announcements after a swap ----------------------------------------------
// Focus goes to the outcome of an action: an element the answer marks with
// data-focus-after-swap (e.g. "Concluded ..."); else, when the focused control was
// replaced, to its new copy, so keyboard users never fall back to <body>.
let lastFocus = null;
let focusTimer = null;
let focusSummary = false;
document.addEventListener("htmx:beforeSwap", (event) => {
  // A new page of results: the reader goes on from its first line, at the top.
  focusSummary = Boolean(event.detail.requestConfig && event.detail.requestConfig.elt.closest("[data-focus-summary]"));
  const active = document.activeElement;
  const holder = active && active !== document.body ? (active.id ? active : active.closest("[id]")) : null;
  lastFocus = holder ? { id: holder.id, tag: active.tagName, text: active.textContent.trim() } : null;
  // htmx does not tell the document when the swapped block was removed outright (its
  // events fire on the detached element): look again once the swap has settled.
  clearTimeout(focusTimer);
  focusTimer = setTimeout(afterSwap, 150);
});
document.addEventListener("htmx:afterSettle", () => {
  clearTimeout(focusTimer);
  afterSwap();
});

function focusable(root, tag, text) {
  const candidates = Array.from(root.querySelectorAll(tag));
  if (root.tagName === tag) candidates.unshift(root);
  return candidates.find((el) => el.textContent.trim() === text) || candidates[0] || null;
}

function focusBlock(el) {
  if (!el.hasAttribute("tabindex")) el.setAttribute("tabindex", "-1");
  el.focus();
}

function afterSwap() {
  followView();
  const outcome = document.querySelector("[data-focus-after-swap]");
  const summary = focusSummary && document.getElementById("results-summary");
  focusSummary = false;
  if (summary) {
    summary.focus({ preventScroll: true });
  } else if (outcome) {
    outcome.removeAttribute("data-focus-after-swap");
    focusBlock(outcome);
  } else if (lastFocus && (document.activeElement === document.body || !document.activeElement)) {
    const holder = document.getElementById(lastFocus.id);
    const target = holder && focusable(holder, lastFocus.tag, lastFocus.text);
    if (target) target.focus();
    // The control is gone or hidden now (a closed edit form): the block that holds it.
    if (holder && document.activeElement !== target) focusBlock(holder);
    // The block itself went away (a removed bookmark): the page's main region.
    if (document.activeElement === document.body) document.getElementById("main")?.focus();
  }
  lastFocus = null;
  // Text the answer wants read out (e.g. "Showing 1–50 of 120"), through the one live region.
  const said = document.querySelector("[data-announce]");
  if (said) {
    said.removeAttribute("data-announce");
    announce(said.textContent.trim());
  }
}

// The experiments list's controls outside the swapped block follow what it shows
// (data-view-* on #results), so a header sort or a tab never leaves them saying otherwise.
// The search box is left alone while someone is typing in it.
function followView() {
  const view = document.getElementById("results");
  if (!view || !("viewSort" in view.dataset)) return;
  const search = document.getElementById("search-q");
  if (search && document.activeElement !== search) search.value = view.dataset.viewQ;
  const sort = document.getElementById("sort");
  if (sort) sort.value = view.dataset.viewSort;
  const size = document.getElementById("page-size");
  if (size) size.value = view.dataset.viewSize;
}

// --- Dates ------------------------------------------------------------------------------
// Every date is shown in UTC; hovering one shows it in the reader's own time zone.
function localTimes(root) {
  root.querySelectorAll("time[datetime][data-utc]").forEach((el) => {
    const when = new Date(el.getAttribute("datetime"));
    if (Number.isNaN(when.getTime())) return;
    const local = when.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short", hourCycle: "h23" });
    el.title = `Your time: ${local}`;
    el.removeAttribute("data-utc");
  });
}
// Controls that only work with this script stay hidden without it.
function enhance(root) {
  root.querySelectorAll("[data-fill-now][hidden]").forEach((el) => { el.hidden = false; });
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  enhance(document);
  // Marks in the first page load are not news: only a swap's answer is announced.
  document.querySelectorAll("[data-announce]").forEach((el) => el.removeAttribute("data-announce"));
});
document.addEventListener("htmx:load", (event) => {
  localTimes(event.detail.elt);
  enhance(event.detail.elt);
});
