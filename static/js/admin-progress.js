// The admin's job progress bars (vector sets, evaluations) stay live: while a job is pending or
// running, its row polls the admin's progress endpoint and moves the bar; when it ends, the page
// reloads to show what the finished job offers (links, results).
(function () {
  "use strict";

  const POLL_MS = 2000;
  const RUNNING = ["pending", "running"];

  async function poll(cell) {
    let job;
    try {
      const response = await fetch(cell.dataset.url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return true; // try again on the next round
      job = await response.json();
    } catch (err) {
      return true;
    }
    cell.querySelector("progress").value = job.progress;
    cell.querySelector(".job-progress-text").textContent = job.progress + " %";
    if (job.status !== cell.dataset.status) {
      cell.dataset.status = job.status;
      if (!RUNNING.includes(job.status)) return "ended";
    }
    return RUNNING.includes(job.status);
  }

  const cells = [...document.querySelectorAll(".job-progress[data-url]")].filter((c) => RUNNING.includes(c.dataset.status));
  if (!cells.length) return;
  let live = cells;
  const timer = setInterval(async function () {
    const results = await Promise.all(live.map(poll));
    if (results.includes("ended")) {
      clearInterval(timer);
      location.reload();
      return;
    }
    live = live.filter((_, i) => results[i]);
    if (!live.length) clearInterval(timer);
  }, POLL_MS);
})();
