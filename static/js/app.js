// Experiment Desk: the little behaviour htmx does not give us. No inline scripts (CSP).
"use strict";
document.addEventListener("showToast", (event) => {
  // Raised by the server with HX-Trigger: {"showToast": {"message": "..."}}.
  const box = document.getElementById("toasts");
  const text = event.detail && event.detail.message;
  if (!box || !text) return;
  const toast = document.createElement("p");
  toast.className = "toast";
  toast.setAttribute("role", "status");
  toast.textContent = text; // text, never HTML
  box.append(toast);
  setTimeout(() => toast.remove(), 6000);
});
document.addEventListener("click", (event) => {
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
    }
  }
});
