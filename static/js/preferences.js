// The preference panel. SELECT: a slider's `change` (released, not every `input` step) PATCHes
// /api/profile/ and the summary under it is replaced by the server's ("35 % Budget"), so the
// page shows what was saved. The mode switch sets how the profile is meant to change from now
// on (LEARN lets feedback on answers move it). Recent changes are listed with Undo buttons.
(function () {
  "use strict";

  const form = document.getElementById("pref-form");
  if (!form) return; // no vector set is ready: the page explains why

  const { api, renderProfile, refreshHistory } = window.SteerLab;
  const errorBox = document.getElementById("pref-error");
  const modeHelp = document.getElementById("pref-mode-help");
  const HELP = {
    select: "Move the sliders; the next answer follows them.",
    calibrate: "Compare two answers a few times below; your choices set a dimension.",
    learn: "Rate answers (👍 Good / 👎 Not quite) and say what to change (“too formal”); your sliders move for you.",
  };

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = !message;
  }

  async function save(method, body) {
    form.classList.add("pref-saving");
    try {
      renderProfile(await api(method, "/api/profile/", body));
      showError("");
      await refreshHistory();
    } catch (err) {
      showError("Not saved: " + err.message);
    } finally {
      form.classList.remove("pref-saving");
    }
  }

  form.addEventListener("change", function (event) {
    const target = event.target;
    if (target.classList.contains("pref-slider")) {
      save("PATCH", { strengths: { [target.name]: Number(target.value) / 100 }, source: "select" });
    } else if (target.name === "pref-mode") {
      save("PATCH", { mode: target.value });
    }
  });

  document.getElementById("pref-reset").addEventListener("click", function () {
    const strengths = {};
    for (const slider of form.querySelectorAll(".pref-slider")) strengths[slider.name] = 0;
    save("PUT", { strengths: strengths, source: "reset" });
  });

  document.addEventListener("steerlab:mode", function (event) {
    if (modeHelp) modeHelp.textContent = HELP[event.detail] || "";
    document.body.dataset.steeringMode = event.detail;
  });
  const current = document.getElementById("pref-mode");
  if (current) {
    if (modeHelp) modeHelp.textContent = HELP[current.dataset.mode] || "";
    document.body.dataset.steeringMode = current.dataset.mode;
  }

  refreshHistory();
})();
