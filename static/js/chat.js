// The chat page: sends prompts over the /ws/chat/ websocket and streams the answer in as it
// comes (a frame holds the tokens of up to 100 ms, STEERLAB_STREAM_INTERVAL_MS). Answers are
// rendered as markdown through SteerLab.renderMarkdown (escaped raw HTML, DOMPurify); everything
// else the server or the model sends is written with textContent.
(function () {
  "use strict";

  const { renderMarkdown, strengthPercent } = window.SteerLab;
  const list = document.getElementById("chat-messages");
  const form = document.getElementById("chat-form");
  const prompt = document.getElementById("chat-prompt");
  const send = document.getElementById("chat-send");
  const stop = document.getElementById("chat-stop");
  const status = document.getElementById("chat-status");
  const conversations = document.getElementById("conversation-list");
  const labels = JSON.parse(document.getElementById("dimension-labels").textContent);
  // Within this many pixels of the bottom, the list follows a streaming answer; a user who
  // scrolled further up to read is left where they are.
  const FOLLOW_SLACK_PX = 48;
  const CONTINUE_PROMPT = "Continue.";

  let conversationId = JSON.parse(document.getElementById("conversation-id").textContent) || null;
  let socket = null;
  let retryDelay = 1000;
  let following = true;
  // The generation in flight: its elements and, once the start frame came, its request_id.
  let current = null;

  // "80 % Formal · 35 % Budget", as the server renders it under stored answers.
  function steeringLabel(strengths) {
    const parts = Object.keys(strengths || {}).sort()
      .filter((name) => strengthPercent(strengths[name]) > 0)
      .map((name) => {
        const value = strengths[name];
        const ends = labels[name] || ["−" + name, "+" + name];
        return strengthPercent(value) + " % " + (value > 0 ? ends[1] : ends[0]);
      });
    return parts.length ? parts.join(" · ") : "unsteered";
  }

  function atBottom() {
    return list.scrollHeight - list.scrollTop - list.clientHeight <= FOLLOW_SLACK_PX;
  }

  function follow() {
    if (following) list.scrollTop = list.scrollHeight;
  }

  list.addEventListener("scroll", function () {
    following = atBottom();
  }, { passive: true });

  function addMessage(role, text) {
    const hint = document.getElementById("chat-hint");
    if (hint) hint.remove();
    const item = document.createElement("li");
    item.className = "chat-message chat-" + role;
    const body = document.createElement("div");
    body.className = "chat-text";
    body.textContent = text;
    item.appendChild(body);
    list.appendChild(item);
    following = true; // sending is a request to see the answer
    follow();
    return item;
  }

  function setBusy(busy) {
    send.disabled = busy;
    stop.hidden = !busy;
  }

  function finish() {
    if (current) current.body.classList.remove("streaming");
    current = null;
    setBusy(false);
  }

  // An answer stopped by the token limit: say so, and offer to go on from where it stopped.
  function markCut(item) {
    item.classList.add("chat-cut");
    if (item.querySelector(".chat-cutoff")) return;
    const note = document.createElement("div");
    note.className = "chat-cutoff";
    const text = document.createElement("span");
    text.textContent = "Cut off at the answer length limit.";
    const more = document.createElement("button");
    more.type = "button";
    more.className = "button button-quiet button-small chat-continue";
    more.textContent = "Continue";
    more.addEventListener("click", function () {
      if (generate(CONTINUE_PROMPT, { draft: false })) more.remove();
    });
    note.append(text, " ", more);
    item.querySelector(".chat-text").after(note);
  }

  // A conversation created by this page's first message: show it in the URL and the list.
  function adoptConversation(id, title) {
    if (!id || id === conversationId) return;
    conversationId = id;
    history.replaceState(null, "", "/chat/" + id + "/");
    const announce = () => document.dispatchEvent(new CustomEvent("steerlab:conversation", { detail: { id: id, title: title } }));
    if (conversations.querySelector('a[href="/chat/' + id + '/"]')) return announce();
    const empty = conversations.querySelector(".conversation-empty");
    if (empty) empty.remove();
    for (const link of conversations.querySelectorAll("[aria-current]")) link.removeAttribute("aria-current");
    const item = document.createElement("li");
    item.className = "conversation";
    item.dataset.conversation = id;
    const link = document.createElement("a");
    link.href = "/chat/" + id + "/";
    link.className = "conversation-link";
    link.textContent = title;
    link.setAttribute("aria-current", "page");
    item.appendChild(link);
    conversations.prepend(item);
    announce();
  }

  // Refused before it started (too long, too many, busy): the bubbles go, the draft stays.
  function withdraw(message) {
    current.userItem.remove();
    current.item.remove();
    if (current.draft !== null && !prompt.value) prompt.value = current.draft;
    status.textContent = message;
    finish();
  }

  // Conditional steering: a topical preference that did not apply to this turn says so, quietly.
  function showConditions(item, conditions) {
    if (!conditions) return;
    const skipped = Object.keys(conditions).filter(function (name) { return !conditions[name].applied; });
    if (!skipped.length) return;
    const note = document.createElement("div");
    note.className = "chat-conditions muted";
    note.textContent = skipped.map(function (name) { return name + " not applied: not about " + name; }).join(" · ");
    note.title = skipped.map(function (name) {
      return name + ": score " + conditions[name].score + ", applies from " + conditions[name].threshold;
    }).join("\n");
    item.appendChild(note);
  }

  function onFrame(frame) {
    // Frames for another generation (another tab's cancel, a stale request) are not ours.
    if (!current || (frame.request_id && current.requestId && frame.request_id !== current.requestId)) {
      if (frame.type === "error" && !frame.request_id) status.textContent = frame.message;
      return;
    }
    if (frame.type === "start") {
      current.requestId = frame.request_id;
      current.steering.textContent = steeringLabel(frame.preferences_applied);
      if (current.draft !== null && prompt.value === current.draft) prompt.value = "";
      adoptConversation(frame.conversation_id, current.title);
    } else if (frame.type === "token") {
      current.text += frame.text;
      renderMarkdown(current.body, current.text);
      follow();
    } else if (frame.type === "done") {
      renderMarkdown(current.body, frame.text);
      const reason = frame.stats && frame.stats.finish_reason;
      if (reason === "cancelled") {
        current.item.classList.add("chat-stopped");
        current.steering.textContent += " · stopped";
      } else if (frame.stats && frame.stats.interaction_id) {
        current.item.dataset.interaction = frame.stats.interaction_id;
        if (reason === "length") markCut(current.item);
        window.SteerLab.attachFeedback(current.item, frame.stats.interaction_id);
        document.dispatchEvent(new CustomEvent("steerlab:answered", { detail: { interaction: frame.stats.interaction_id } }));
      }
      window.SteerLab.showReadout(current.item, frame.readout, labels);
      showConditions(current.item, frame.stats && frame.stats.conditions);
      follow();
      finish();
    } else if (frame.type === "error") {
      if (!current.requestId) {
        withdraw("Not sent: " + frame.message);
        return;
      }
      const error = document.createElement("div");
      error.className = "chat-error";
      error.textContent = "Error (" + frame.code + "): " + frame.message;
      current.item.appendChild(error);
      finish();
    }
  }

  function connect() {
    socket = new WebSocket(window.SteerLab.chatSocketUrl());
    socket.addEventListener("open", function () {
      retryDelay = 1000;
      status.textContent = "";
      form.dataset.connected = "true";
    });
    socket.addEventListener("message", function (event) {
      onFrame(JSON.parse(event.data));
    });
    socket.addEventListener("close", function (event) {
      form.dataset.connected = "false";
      if (current) {
        const error = document.createElement("div");
        error.className = "chat-error";
        error.textContent = "The connection was lost before the answer was complete.";
        current.item.appendChild(error);
        finish();
      }
      if (event.code === 4401) {
        status.textContent = "You are logged out; log in again to chat.";
        return;
      }
      status.textContent = "Disconnected; reconnecting…";
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  }

  // Send `text` as the next turn. The textarea's draft is cleared only once the server has
  // accepted the turn (its start frame): a refused prompt is still there to fix.
  function generate(text, { draft }) {
    if (!text || current) return false;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      status.textContent = "Not connected yet; try again in a moment.";
      return false;
    }
    const length = [...text].length; // characters as the server counts them, not UTF-16 units
    const maxChars = Number(prompt.dataset.maxChars || 0);
    if (maxChars && length > maxChars) {
      status.textContent = "Your message is " + length + " characters long; the limit is " + maxChars +
        ". Shorten it and send again.";
      return false;
    }
    status.textContent = "";
    // Continue goes on from the latest answer only: older offers are stale once a turn is sent.
    for (const offer of list.querySelectorAll(".chat-continue")) offer.remove();
    const userItem = addMessage("user", text);
    const item = addMessage("assistant", "");
    const body = item.querySelector(".chat-text");
    body.classList.add("streaming");
    const steering = document.createElement("div");
    steering.className = "chat-steering";
    item.appendChild(steering);
    current = {
      item: item, userItem: userItem, body: body, steering: steering, requestId: null, text: "",
      title: text.slice(0, 80), draft: draft ? prompt.value : null,
    };
    const frame = { type: "generate", prompt: text, tag: "chat" };
    if (conversationId) frame.conversation_id = conversationId;
    else frame.new_conversation = true;
    socket.send(JSON.stringify(frame));
    setBusy(true);
    return true;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    generate(prompt.value.trim(), { draft: true });
  });

  // Enter sends, Shift+Enter makes a new line.
  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  stop.addEventListener("click", function () {
    if (!current || !socket) return;
    const frame = { type: "cancel" };
    if (current.requestId) frame.request_id = current.requestId;
    socket.send(JSON.stringify(frame));
  });

  // Stored answers: markdown, and the Continue offer on those the token limit cut.
  for (const body of list.querySelectorAll('.chat-text[data-source="markdown"]')) renderMarkdown(body, body.textContent);
  for (const item of list.querySelectorAll(".chat-assistant.chat-cut")) markCut(item);
  for (const item of list.querySelectorAll(".chat-assistant[data-readout]")) {
    window.SteerLab.showReadout(item, JSON.parse(item.dataset.readout), labels);
  }
  const answers = list.querySelectorAll(".chat-assistant");
  for (const offer of list.querySelectorAll(".chat-continue")) {
    if (offer.closest(".chat-assistant") !== answers[answers.length - 1]) offer.remove();
  }
  // A long conversation opens at its latest turn.
  list.scrollTop = list.scrollHeight;
  connect();
})();
