// CALIBRATE mode: pick a dimension, compare answer A (steered at `low`) with answer B (at
// `high`) for a calibration question, choose, repeat for a few rounds. The server is stateless
// (/api/calibrate/start/ and /choose/ take and return the interval); the two answers come from
// a websocket of our own, so a calibration never mixes with the chat's frames. The two generate
// frames carry tags "a" and "b" and no conversation, so nothing lands in the chat history.
(function () {
  "use strict";

  const section = document.getElementById("calibrate");
  const box = document.getElementById("calibrate-box");
  if (!section || !box) return; // no vector set is ready: nothing to calibrate

  const vectorSet = Number(section.dataset.vectorSet) || null;
  const picker = document.getElementById("calibrate-dimension");
  const startButton = document.getElementById("calibrate-start");
  const resultLine = document.getElementById("calibrate-result");
  const questionLine = document.getElementById("calibrate-question");
  const roundLine = document.getElementById("calibrate-round");
  const roundsLine = document.getElementById("calibrate-rounds");
  const progress = document.getElementById("calibrate-progress");
  const dimensionName = document.getElementById("calibrate-box-dimension");
  const answers = { a: document.getElementById("calibrate-answer-a"), b: document.getElementById("calibrate-answer-b") };
  const choiceButtons = Array.from(document.querySelectorAll("#calibrate-choices [data-choice]"));
  const status = document.getElementById("calibrate-status");
  const { api, renderProfile, refreshHistory } = window.SteerLab;
  // Answer length: the server's STEERLAB_CALIBRATE_NEW_TOKENS (long enough to judge a style).
  const MAX_NEW_TOKENS = Number(section.dataset.maxNewTokens) || 60;
  // Continue on a cut answer writes it again with twice the tokens (same seed and steering, so
  // it starts the same), up to the server's limit for one answer.
  const TOKEN_LIMIT = Number(section.dataset.tokenLimit) || 512;
  const roundsChoice = document.getElementById("calibrate-rounds-choice");

  let state = null; // what the server last returned
  let socket = null;
  let finished = { a: false, b: false };
  let lengths = { a: MAX_NEW_TOKENS, b: MAX_NEW_TOKENS }; // each answer's token limit this round
  let seed = 0;
  let logged = { a: null, b: null }; // the interaction ids of answers A and B, for the choice's feedback

  function setChoicesEnabled(enabled) {
    for (const button of choiceButtons) button.disabled = !enabled;
  }

  function closeSocket() {
    if (socket) {
      const old = socket;
      socket = null;
      old.close(); // the server cancels whatever is still generating
    }
  }

  function close() {
    closeSocket();
    state = null;
    box.hidden = true;
    startButton.disabled = false;
    startButton.focus();
  }

  function onFrame(frame) {
    const tag = frame.tag;
    if (tag !== "a" && tag !== "b") {
      if (frame.type === "error") status.textContent = frame.message;
      return;
    }
    const target = answers[tag];
    if (frame.type === "start") {
      target.textContent = "";
      clearCut(tag);
    } else if (frame.type === "token") {
      target.textContent += frame.text;
    } else if (frame.type === "done") {
      target.textContent = frame.text;
      target.classList.remove("streaming");
      finished[tag] = true;
      logged[tag] = frame.stats ? frame.stats.interaction_id : null;
      if (frame.stats && frame.stats.finish_reason === "length") markCut(tag);
    } else if (frame.type === "error") {
      target.classList.remove("streaming");
      target.textContent = "";
      status.textContent = "Answer " + tag.toUpperCase() + " failed (" + frame.code + "): " + frame.message;
      return;
    }
    if (finished.a && finished.b) {
      status.textContent = "Which answer suits you better?";
      setChoicesEnabled(true);
    }
  }

  function openSocket() {
    return new Promise(function (resolve, reject) {
      const opened = new WebSocket(window.SteerLab.chatSocketUrl());
      opened.addEventListener("open", function () { resolve(opened); });
      opened.addEventListener("message", function (event) {
        if (socket === opened) onFrame(JSON.parse(event.data));
      });
      opened.addEventListener("close", function (event) {
        if (socket !== opened && socket !== null) return;
        if (socket === opened) {
          socket = null;
          setChoicesEnabled(false);
          status.textContent = event.code === 4401
            ? "You are logged out; log in again to calibrate."
            : "The connection was lost; abandon and start again.";
        }
        reject(new Error("The chat server could not be reached."));
      });
    });
  }

  function clearCut(tag) {
    const note = answers[tag].parentElement.querySelector(".chat-cutoff");
    if (note) note.remove();
  }

  // A cut answer says so; Continue (while the limit allows more) writes it out longer.
  function markCut(tag) {
    clearCut(tag);
    const note = document.createElement("div");
    note.className = "chat-cutoff";
    note.textContent = "Cut off at " + lengths[tag] + " tokens.";
    if (lengths[tag] < TOKEN_LIMIT) {
      const more = document.createElement("button");
      more.type = "button";
      more.className = "button button-quiet button-small chat-continue";
      more.textContent = "Continue";
      more.addEventListener("click", function () {
        finished[tag] = false;
        setChoicesEnabled(false);
        more.disabled = true;
        sendSide(tag, Math.min(lengths[tag] * 2, TOKEN_LIMIT));
      });
      note.append(" ", more);
    }
    answers[tag].after(note);
  }

  function sendSide(tag, tokens) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      status.textContent = "The connection was lost; abandon and start again.";
      return;
    }
    lengths[tag] = tokens;
    answers[tag].classList.add("streaming");
    const frame = {
      type: "generate",
      purpose: "calibrate",
      tag: tag,
      prompt: state.question,
      preferences: { [state.dimension]: tag === "a" ? state.low : state.high },
      max_new_tokens: tokens,
      seed: seed,
    };
    if (vectorSet) frame.vector_set = vectorSet;
    socket.send(JSON.stringify(frame));
  }

  async function generateRound() {
    finished = { a: false, b: false };
    logged = { a: null, b: null };
    setChoicesEnabled(false);
    roundLine.textContent = String(state.round + 1);
    roundsLine.textContent = String(state.rounds);
    progress.max = state.rounds;
    progress.value = state.round;
    questionLine.textContent = state.question;
    status.textContent = "Writing both answers…";
    if (!socket || socket.readyState !== WebSocket.OPEN) socket = await openSocket();
    // Answers are sampled by default; one seed for both makes steering their only difference.
    seed = Math.floor(Math.random() * 2147483647);
    for (const tag of ["a", "b"]) {
      answers[tag].textContent = "";
      clearCut(tag);
      sendSide(tag, MAX_NEW_TOKENS);
    }
  }

  async function start() {
    const dimension = picker.value;
    startButton.disabled = true;
    resultLine.hidden = true;
    dimensionName.textContent = picker.options[picker.selectedIndex].textContent;
    answers.a.textContent = "";
    answers.b.textContent = "";
    box.hidden = false;
    try {
      const query = new URLSearchParams({ dimension: dimension, rounds: roundsChoice.value });
      if (vectorSet) query.set("vector_set", vectorSet);
      state = await api("GET", "/api/calibrate/start/?" + query.toString());
      await generateRound();
    } catch (err) {
      status.textContent = "Could not start: " + err.message;
    }
  }

  async function choose(choice) {
    if (!state) return;
    setChoicesEnabled(false);
    status.textContent = "Saving your choice…";
    try {
      const next = await api("POST", "/api/calibrate/choose/", {
        dimension: state.dimension,
        low: state.low,
        high: state.high,
        round: state.round,
        rounds: state.rounds,
        choice: choice,
        vector_set: state.vector_set,
        // The server logs the choice only with both answers' ids.
        interaction_a: logged.a && logged.b ? logged.a : null,
        interaction_b: logged.a && logged.b ? logged.b : null,
      });
      state = next;
      if (!next.done) {
        await generateRound();
        return;
      }
      progress.value = next.rounds;
      let profile = next.profile;
      try {
        const query = new URLSearchParams({ vector_set: next.vector_set });
        profile = await api("GET", "/api/profile/?" + query.toString());
      } catch (err) {
        // The choose answer already carries the updated profile; use it.
      }
      if (profile) renderProfile(profile);
      refreshHistory();
      const dim = profile && profile.dimensions.find((d) => d.name === next.dimension);
      resultLine.textContent = "Calibrated: " + (dim ? dim.summary : Math.round(next.result * 100) + " %");
      resultLine.hidden = false;
      close();
    } catch (err) {
      status.textContent = "Not saved: " + err.message;
      setChoicesEnabled(finished.a && finished.b);
    }
  }

  startButton.addEventListener("click", start);
  document.getElementById("calibrate-abandon").addEventListener("click", close);
  for (const button of choiceButtons) {
    button.addEventListener("click", function () { choose(button.dataset.choice); });
  }
  box.addEventListener("keydown", function (event) {
    if (event.key === "Escape") close();
  });
})();
