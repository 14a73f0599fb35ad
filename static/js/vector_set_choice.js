// The vector set selector (chat and profile pages): choosing a set PATCHes /api/profile/ with it,
// which makes it the set every chat of this user steers with, then reloads the page so that the
// sliders, calibration and labels are that set's own. The chat's unsent draft survives the reload.
(function () {
  "use strict";

  const select = document.getElementById("vector-set-select");
  const DRAFT = "steerlab:draft";
  const prompt = document.getElementById("chat-prompt");
  if (prompt && sessionStorage.getItem(DRAFT) !== null) {
    prompt.value = sessionStorage.getItem(DRAFT);
    sessionStorage.removeItem(DRAFT);
  }
  if (!select) return; // one set or none: nothing to choose

  const errorBox = document.getElementById("vector-set-error");
  let current = select.value;

  select.addEventListener("change", async function () {
    select.disabled = true;
    try {
      await window.SteerLab.api("PATCH", "/api/profile/", { vector_set: Number(select.value) });
    } catch (err) {
      errorBox.textContent = "Not changed: " + err.message;
      errorBox.hidden = false;
      select.value = current;
      select.disabled = false;
      return;
    }
    current = select.value;
    if (prompt && prompt.value) sessionStorage.setItem(DRAFT, prompt.value);
    location.reload();
  });
})();
