// SELECT mode: one slider per dimension. A slider's `change` (released, not every `input`
// step) PATCHes /api/profile/ with the session cookie and the CSRF token, and the summary
// under it is replaced by the server's ("35 % Budget"), so the page shows what was saved.
(function () {
  "use strict";

  const form = document.getElementById("pref-form");
  if (!form) return; // no vector set is ready: the page explains why

  const errorBox = document.getElementById("pref-error");

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  // Put the server's view of the profile on the page (sliders and summaries).
  function render(profile) {
    for (const d of profile.dimensions) {
      const slider = document.getElementById("pref-" + d.name);
      const summary = document.getElementById("summary-" + d.name);
      if (!slider || !summary) continue;
      slider.value = Math.round(d.strength * 100);
      slider.setAttribute("aria-valuetext", d.summary);
      summary.textContent = d.summary;
    }
    const mode = document.getElementById("pref-mode");
    if (mode && profile.mode) mode.dataset.mode = profile.mode;
  }

  async function save(method, strengths) {
    form.classList.add("pref-saving");
    try {
      const response = await fetch("/api/profile/", {
        method: method,
        credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
        body: JSON.stringify({ strengths: strengths, source: "select" }),
      });
      const body = await response.json().catch(() => ({}));
      if (!response.ok) {
        showError("Not saved: " + (JSON.stringify(body.strengths || body.detail || body) || response.status));
        return;
      }
      showError("");
      render(body);
    } catch (err) {
      showError("Not saved: the server could not be reached.");
    } finally {
      form.classList.remove("pref-saving");
    }
  }

  form.addEventListener("change", function (event) {
    const slider = event.target;
    if (!slider.classList.contains("pref-slider")) return;
    save("PATCH", { [slider.name]: Number(slider.value) / 100 });
  });

  document.getElementById("pref-reset").addEventListener("click", function () {
    const strengths = {};
    for (const slider of form.querySelectorAll(".pref-slider")) strengths[slider.name] = 0;
    save("PUT", strengths);
  });
})();
