// The chat page's conversations: the list (a drawer on phones), its search, and the open
// conversation's title with Rename and Delete, all through /api/conversations/. Titles are
// written with textContent. A conversation's first answer names it (the server does); the
// page picks the new title up after that answer.
(function () {
  "use strict";

  const { api } = window.SteerLab;
  const list = document.getElementById("conversation-list");
  const search = document.getElementById("conversation-search");
  const sidebar = document.getElementById("chat-sidebar");
  const toggle = document.getElementById("conversations-toggle");
  const closer = document.getElementById("conversations-close");
  const backdrop = document.getElementById("drawer-backdrop");
  const title = document.getElementById("conversation-title");
  const actions = document.getElementById("conversation-actions");
  const renameForm = document.getElementById("conversation-rename-form");
  const renameInput = document.getElementById("conversation-rename-input");
  const confirmBox = document.getElementById("conversation-delete-confirm");
  const status = document.getElementById("chat-status");
  const SEARCH_DELAY_MS = 250;

  let currentId = JSON.parse(document.getElementById("conversation-id").textContent) || null;

  const timeFormat = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

  function entry(c) {
    const item = document.createElement("li");
    item.className = "conversation";
    item.dataset.conversation = c.id;
    const link = document.createElement("a");
    link.className = "conversation-link";
    link.href = "/chat/" + c.id + "/";
    link.textContent = c.title;
    if (c.id === currentId) link.setAttribute("aria-current", "page");
    const time = document.createElement("time");
    time.className = "conversation-time muted";
    time.dateTime = c.updated_at;
    time.textContent = timeFormat.format(new Date(c.updated_at));
    item.append(link, time);
    return item;
  }

  function render(conversations, query) {
    list.replaceChildren(...conversations.map(entry));
    if (!conversations.length) {
      const empty = document.createElement("li");
      empty.className = "muted conversation-empty";
      empty.textContent = query ? "No conversation mentions “" + query + "”." : "No conversations yet.";
      list.appendChild(empty);
    }
  }

  let searchTimer = null;
  let searchSeq = 0;
  search.addEventListener("input", function () {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(async function () {
      const query = search.value.trim();
      const seq = ++searchSeq;
      try {
        const page = await api("GET", "/api/conversations/?search=" + encodeURIComponent(query));
        if (seq === searchSeq) render(page.results, query);
      } catch (err) {
        status.textContent = "Search failed: " + err.message;
      }
    }, SEARCH_DELAY_MS);
  });

  // Phones: the list is a drawer over the chat.
  function setDrawer(open) {
    sidebar.classList.toggle("drawer-shown", open);
    backdrop.hidden = !open;
    toggle.setAttribute("aria-expanded", String(open));
    if (open) search.focus();
    else if (document.activeElement && sidebar.contains(document.activeElement)) toggle.focus();
  }
  toggle.addEventListener("click", () => setDrawer(!sidebar.classList.contains("drawer-shown")));
  closer.addEventListener("click", () => setDrawer(false));
  backdrop.addEventListener("click", () => setDrawer(false));
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && sidebar.classList.contains("drawer-shown")) setDrawer(false);
  });

  function showTitle(text) {
    title.textContent = text;
    document.title = text + " · Chat · SteerLab";
    const link = list.querySelector('[data-conversation="' + currentId + '"] .conversation-link');
    if (link) link.textContent = text;
  }

  // Rename: an inline form in place of the title.
  document.getElementById("conversation-rename").addEventListener("click", function () {
    renameInput.value = title.textContent;
    renameForm.hidden = false;
    title.hidden = actions.hidden = true;
    renameInput.select();
  });
  function closeRename() {
    renameForm.hidden = true;
    title.hidden = actions.hidden = false;
  }
  document.getElementById("conversation-rename-cancel").addEventListener("click", closeRename);
  renameForm.addEventListener("submit", async function (event) {
    event.preventDefault();
    try {
      const saved = await api("PATCH", "/api/conversations/" + currentId + "/", { title: renameInput.value });
      showTitle(saved.title);
      closeRename();
    } catch (err) {
      status.textContent = "Not renamed: " + err.message;
    }
  });

  // Delete: asked once, in the page (what it erases is said there), then back to a new chat.
  document.getElementById("conversation-delete").addEventListener("click", function () {
    confirmBox.hidden = false;
    document.getElementById("conversation-delete-no").focus();
  });
  document.getElementById("conversation-delete-no").addEventListener("click", () => { confirmBox.hidden = true; });
  document.getElementById("conversation-delete-yes").addEventListener("click", async function () {
    try {
      await api("DELETE", "/api/conversations/" + currentId + "/");
      location.assign("/chat/");
    } catch (err) {
      status.textContent = "Not deleted: " + err.message;
      confirmBox.hidden = true;
    }
  });

  // Events from chat.js: a conversation the first message started, and each finished answer
  // (the first names the conversation on the server).
  document.addEventListener("steerlab:conversation", function (event) {
    currentId = event.detail.id;
    actions.hidden = false;
    showTitle(event.detail.title);
  });
  document.addEventListener("steerlab:answered", async function () {
    if (!currentId) return;
    try {
      const saved = await api("GET", "/api/conversations/" + currentId + "/");
      if (saved.title !== title.textContent) showTitle(saved.title);
      title.dataset.named = "true"; // the server's title is shown (tests wait for it)
    } catch (err) {
      // The title stays as it was; the next answer or a reload shows the new one.
    }
  });
})();
