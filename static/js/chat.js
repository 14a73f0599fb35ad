// The chat page: sends prompts over the /ws/chat/ websocket and streams the answer in token by
// token. Model output is only ever written with textContent, never as HTML.
(function () {
  "use strict";

  const list = document.getElementById("chat-messages");
  const form = document.getElementById("chat-form");
  const prompt = document.getElementById("chat-prompt");
  const send = document.getElementById("chat-send");
  const stop = document.getElementById("chat-stop");
  const status = document.getElementById("chat-status");
  const conversations = document.getElementById("conversation-list");
  const labels = JSON.parse(document.getElementById("dimension-labels").textContent);

  let conversationId = JSON.parse(document.getElementById("conversation-id").textContent) || null;
  let socket = null;
  let retryDelay = 1000;
  // The generation in flight: its elements and, once the start frame came, its request_id.
  let current = null;

  // "80 % Formal · 35 % Budget", as the server renders it under stored answers.
  function steeringLabel(strengths) {
    const parts = Object.keys(strengths || {}).sort()
      .filter((name) => strengths[name])
      .map((name) => {
        const value = strengths[name];
        const ends = labels[name] || ["−" + name, "+" + name];
        return Math.round(Math.abs(value) * 100) + " % " + (value > 0 ? ends[1] : ends[0]);
      });
    return parts.length ? parts.join(" · ") : "unsteered";
  }

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
    item.scrollIntoView({ block: "end" });
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

  // A conversation created by this page's first message: show it in the URL and the list.
  function adoptConversation(id, title) {
    if (!id || id === conversationId) return;
    conversationId = id;
    history.replaceState(null, "", "/chat/" + id + "/");
    const empty = conversations.querySelector(".conversation-empty");
    if (empty) empty.remove();
    const item = document.createElement("li");
    const link = document.createElement("a");
    link.href = "/chat/" + id + "/";
    link.textContent = title;
    link.setAttribute("aria-current", "page");
    item.appendChild(link);
    conversations.prepend(item);
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
      adoptConversation(frame.conversation_id, current.title);
    } else if (frame.type === "token") {
      current.body.textContent += frame.text;
    } else if (frame.type === "done") {
      current.body.textContent = frame.text;
      if (frame.stats && frame.stats.finish_reason === "cancelled") {
        current.item.classList.add("chat-stopped");
        current.steering.textContent += " · stopped";
      } else if (frame.stats && frame.stats.interaction_id) {
        current.item.dataset.interaction = frame.stats.interaction_id;
        window.SteerLab.attachFeedback(current.item, frame.stats.interaction_id);
      }
      showConditions(current.item, frame.stats && frame.stats.conditions);
      finish();
    } else if (frame.type === "error") {
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

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text || current) return;
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      status.textContent = "Not connected yet; try again in a moment.";
      return;
    }
    addMessage("user", text);
    const item = addMessage("assistant", "");
    const body = item.querySelector(".chat-text");
    body.classList.add("streaming");
    const steering = document.createElement("div");
    steering.className = "chat-steering";
    item.appendChild(steering);
    current = { item: item, body: body, steering: steering, requestId: null, title: text.slice(0, 80) };

    const frame = { type: "generate", prompt: text };
    if (conversationId) frame.conversation_id = conversationId;
    else frame.new_conversation = true;
    socket.send(JSON.stringify(frame));
    prompt.value = "";
    setBusy(true);
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

  // A long conversation opens at its latest turn.
  list.scrollTop = list.scrollHeight;
  connect();
})();
