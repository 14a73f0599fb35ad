// LEARN on the chat page: 👍 / 👎 and an optional short text under each finished answer. The
// feedback is POSTed to /api/interactions/<id>/feedback/; in LEARN mode a background task reads
// it and moves the profile, so the page polls /api/feedback/<id>/ until it has an outcome, then
// says what was learned ("cost Neutral → 35 % Budget") with an Undo button, and refreshes the
// sliders and the recent changes.
(function () {
  "use strict";

  const { api, refreshProfile, undoChange } = window.SteerLab;
  const POLL_MS = 500;
  const POLL_LIMIT_MS = 60000;

  function button(text, className, label) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "button button-quiet button-small " + className;
    b.textContent = text;
    if (label) b.setAttribute("aria-label", label);
    return b;
  }

  // The controls under one answer, logged as interaction `interactionId`.
  function attach(item, interactionId) {
    if (!interactionId || item.querySelector(".chat-feedback")) return;
    const box = document.createElement("div");
    box.className = "chat-feedback";
    const up = button("👍 Good", "feedback-up", "Good answer");
    const down = button("👎 Not quite", "feedback-down", "Bad answer");
    up.setAttribute("aria-pressed", "false");
    down.setAttribute("aria-pressed", "false");
    const form = document.createElement("form");
    form.className = "feedback-form";
    form.hidden = true;
    const text = document.createElement("input");
    text.type = "text";
    text.maxLength = 2000;
    text.className = "feedback-text";
    text.placeholder = "What should change? e.g. too expensive, more formal";
    text.setAttribute("aria-label", "What should change in the answer");
    const send = document.createElement("button");
    send.type = "submit";
    send.className = "button button-small feedback-send";
    send.textContent = "Send";
    form.append(text, send);
    const note = document.createElement("p");
    note.className = "feedback-note muted";
    note.setAttribute("role", "status");
    const say = button("Say what to change", "feedback-say");
    box.append(up, down, say, form, note);
    item.appendChild(box);

    let thumbs = null;
    up.addEventListener("click", function () {
      thumbs = 1;
      up.setAttribute("aria-pressed", "true");
      down.setAttribute("aria-pressed", "false");
      submit(box, interactionId, { thumbs: 1 });
    });
    down.addEventListener("click", function () {
      thumbs = -1;
      down.setAttribute("aria-pressed", "true");
      up.setAttribute("aria-pressed", "false");
      form.hidden = false;
      note.textContent = "Say what to change, or just Send.";
      text.focus();
    });
    // A text alone is feedback too: the 👎 is optional.
    say.addEventListener("click", function () {
      form.hidden = !form.hidden;
      if (!form.hidden) text.focus();
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      const payload = { text: text.value.trim() };
      if (thumbs !== null) payload.thumbs = thumbs;
      if (payload.thumbs === undefined && !payload.text) {
        note.textContent = "Give a 👍 / 👎 or a few words.";
        return;
      }
      submit(box, interactionId, payload);
    });
  }

  function setEnabled(box, enabled) {
    for (const control of box.querySelectorAll("button, input")) control.disabled = !enabled;
  }

  async function submit(box, interactionId, payload) {
    const note = box.querySelector(".feedback-note");
    setEnabled(box, false);
    note.textContent = "Sending…";
    let feedback;
    try {
      feedback = await api("POST", "/api/interactions/" + interactionId + "/feedback/", payload);
    } catch (err) {
      note.textContent = "Not saved: " + err.message;
      setEnabled(box, true);
      return;
    }
    box.querySelector(".feedback-form").hidden = true;
    box.dataset.feedbackId = feedback.id;
    const started = Date.now();
    while (feedback.learn_status === "pending" && Date.now() - started < POLL_LIMIT_MS) {
      note.textContent = feedback.learn_note || "Learning from your feedback…";
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      try {
        feedback = await api("GET", "/api/feedback/" + feedback.id + "/");
      } catch (err) {
        // A dropped poll is retried until the limit.
      }
    }
    show(box, feedback);
  }

  function show(box, feedback, { refresh = true } = {}) {
    const note = box.querySelector(".feedback-note");
    box.classList.add("feedback-given");
    box.dataset.learnStatus = feedback.learn_status;
    note.replaceChildren();
    const text = document.createElement("span");
    text.className = "feedback-outcome";
    text.textContent = feedback.learn_status === "pending"
      ? "Saved; learning is taking a while: your preferences will update when it is done."
      : feedback.learn_note || "Thanks, saved.";
    note.appendChild(text);
    const undone = (feedback.updates || []).length && feedback.updates.every((u) => u.undone);
    if (feedback.learn_status === "applied" && undone && !refresh) {
      text.textContent = (feedback.learn_note || "") + " · undone";
    } else if (feedback.learn_status === "applied") {
      note.classList.add("feedback-learned");
      const undo = button("Undo", "feedback-undo", "Undo what was learned");
      undo.addEventListener("click", async function () {
        undo.disabled = true;
        for (const update of feedback.updates.filter((u) => !u.undone)) await undoChange(update.id);
        text.textContent = "Undone: your preferences are back where they were.";
        undo.remove();
      });
      note.appendChild(undo);
      if (refresh) refreshProfile().catch(() => {});
    } else if (feedback.learn_status === "off") {
      const learn = button("Use Learn mode", "feedback-learn-mode");
      learn.addEventListener("click", async function () {
        learn.disabled = true;
        try {
          window.SteerLab.renderProfile(await api("PATCH", "/api/profile/", { mode: "learn" }));
          text.textContent = "Learn mode is on: your next feedback adjusts your preferences.";
          learn.remove();
        } catch (err) {
          text.textContent = "Could not switch: " + err.message;
          learn.disabled = false;
        }
      });
      note.appendChild(learn);
    }
  }

  // An answer rated before (a reopened conversation): its pressed button and what LEARN made of
  // it, with the controls off, since an answer is rated once (the server refuses a second).
  async function restore(item) {
    const box = item.querySelector(".chat-feedback");
    const thumbs = Number(item.dataset.thumbs || 0);
    if (thumbs) box.querySelector(thumbs > 0 ? ".feedback-up" : ".feedback-down").setAttribute("aria-pressed", "true");
    box.classList.add("feedback-given");
    setEnabled(box, false);
    try {
      show(box, await api("GET", "/api/feedback/" + item.dataset.feedback + "/"), { refresh: false });
    } catch (err) {
      box.querySelector(".feedback-note").textContent = "Rated.";
    }
  }

  // Answers already on the page (an opened conversation) get their controls too.
  for (const item of document.querySelectorAll(".chat-assistant[data-interaction]")) {
    attach(item, item.dataset.interaction);
    if (item.dataset.feedback) restore(item);
  }

  window.SteerLab.attachFeedback = attach;
})();
