// The profile page: each change in the history can be undone once; the page then reloads to
// show the new strengths and the undo itself in the history.
(function () {
  "use strict";

  for (const button of document.querySelectorAll(".history-undo[data-update]")) {
    button.addEventListener("click", async function () {
      await window.SteerLab.undoChange(button.dataset.update, button);
      location.reload();
    });
  }
})();
