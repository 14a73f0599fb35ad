// What the chat and profile pages share: calling the REST API with the session cookie and the
// CSRF token, showing the server's profile on the page (sliders, summaries, mode), and the
// list of recent profile changes with their Undo buttons. Loaded first; the other scripts use
// window.SteerLab. Server text is only ever written with textContent, never as HTML.
(function () {
  "use strict";

  const MODES = {
    select: "Select (sliders)",
    calibrate: "Calibrate (compare answers)",
    learn: "Learn (from feedback)",
  };
  const SOURCES = {
    select: "slider", calibrate: "calibration", learn: "learned from feedback", api: "API", undo: "undo", reset: "reset",
  };

  function csrfToken() {
    const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  // The chat websocket on this host, encrypted when the page is.
  function chatSocketUrl() {
    return (location.protocol === "https:" ? "wss" : "ws") + "://" + location.host + "/ws/chat/";
  }

  function errorText(body, fallback) {
    if (!body || typeof body !== "object") return fallback;
    if (body.detail) return String(body.detail);
    return Object.values(body).flat().join(" ") || fallback;
  }

  // fetch() as JSON; a non-2xx answer throws an Error whose message is the server's.
  async function api(method, url, payload) {
    const options = { method: method, credentials: "same-origin", headers: { "X-CSRFToken": csrfToken() } };
    if (payload !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(payload);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (err) {
      throw new Error("The server could not be reached.");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(errorText(body, "The server answered " + response.status + "."));
    return body;
  }

  function labelsOnPage() {
    const node = document.getElementById("dimension-labels");
    return node ? JSON.parse(node.textContent) : {};
  }

  // |strength| as a whole percentage, exactly as the server rounds it (selectors.strength_percent):
  // half away from zero, after cutting float noise at 6 decimals, so that one change reads as
  // one number in the LEARN note, the slider, the history and the answers' labels.
  function strengthPercent(value) {
    return Math.floor(Number((Math.abs(value) * 100).toFixed(6)) + 0.5);
  }

  // -0.35 on Budget ↔ Luxury reads "35 % Budget", as the server writes it.
  function strengthSummary(name, value) {
    const ends = labelsOnPage()[name] || ["−" + name, "+" + name];
    const percent = strengthPercent(value);
    return percent === 0 ? "Neutral" : percent + " % " + (value > 0 ? ends[1] : ends[0]);
  }

  // Model output as markdown, made safe: raw HTML in it is shown as text (never parsed), and
  // what marked renders goes through DOMPurify (no scripts, handlers, javascript: links or
  // images, which would fetch from anywhere). Without the vendored libraries, plain text.
  let markdownReady = false;
  function prepareMarkdown() {
    if (markdownReady || !window.marked || !window.DOMPurify) return markdownReady;
    const escape = (text) => text.replace(/[&<>"']/g, (c) => "&#" + c.charCodeAt(0) + ";");
    window.marked.use({ gfm: true, breaks: true, renderer: { html: (token) => escape(token.text || token.raw || "") } });
    window.DOMPurify.addHook("afterSanitizeAttributes", function (node) {
      if (node.tagName === "A") {
        node.setAttribute("rel", "noopener noreferrer nofollow");
        node.setAttribute("target", "_blank");
      }
    });
    markdownReady = true;
    return true;
  }

  function renderMarkdown(element, text) {
    if (!prepareMarkdown()) {
      element.textContent = text;
      return;
    }
    const html = window.marked.parse(text, { async: false });
    element.innerHTML = window.DOMPurify.sanitize(html, {
      FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "iframe", "svg", "math"],
      FORBID_ATTR: ["style", "class", "id"],
      ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
    });
    element.dataset.markdown = "true";
  }

  // Put the server's view of the profile on the page (sliders, summaries, mode switch).
  function renderProfile(profile) {
    for (const d of profile.dimensions || []) {
      const slider = document.getElementById("pref-" + d.name);
      const summary = document.getElementById("summary-" + d.name);
      if (slider) {
        slider.value = Math.round(d.strength * 100); // the step is 1: no snapping away from the summary
        slider.setAttribute("aria-valuetext", d.summary);
      }
      if (summary) summary.textContent = d.summary;
      const row = document.querySelector('#profile-strengths tr[data-dimension="' + d.name + '"] .profile-summary');
      if (row) row.textContent = d.summary;
    }
    if (profile.mode) {
      const mode = document.getElementById("pref-mode");
      if (mode) {
        mode.dataset.mode = profile.mode;
        mode.textContent = MODES[profile.mode] || profile.mode;
      }
      const radio = document.querySelector('input[name="pref-mode"][value="' + profile.mode + '"]');
      if (radio) radio.checked = true;
      document.dispatchEvent(new CustomEvent("steerlab:mode", { detail: profile.mode }));
    }
  }

  async function refreshProfile() {
    renderProfile(await api("GET", "/api/profile/"));
    await refreshHistory();
  }

  // The recent changes list (#pref-history), newest first, each undoable once.
  async function refreshHistory() {
    const list = document.getElementById("pref-history");
    if (!list) return;
    const limit = Number(list.dataset.limit || 6);
    let page;
    try {
      page = await api("GET", "/api/profile/history/");
    } catch (err) {
      return; // the list keeps what it showed; the next change refreshes it
    }
    list.replaceChildren();
    const entries = page.results.slice(0, limit);
    if (!entries.length) {
      const empty = document.createElement("li");
      empty.className = "muted";
      empty.textContent = "No changes yet.";
      list.appendChild(empty);
    }
    for (const u of entries) list.appendChild(historyEntry(u));
  }

  function historyEntry(u) {
    const item = document.createElement("li");
    item.className = "history-entry" + (u.undone ? " history-undone" : "");
    item.dataset.source = u.source;
    const text = document.createElement("span");
    text.textContent = u.dimension + ": " + strengthSummary(u.dimension, u.old_strength) + " → " +
      strengthSummary(u.dimension, u.new_strength) + " (" + (SOURCES[u.source] || u.source) + ")" +
      (u.undone ? " · undone" : "");
    if (u.reason) text.title = u.reason;
    item.appendChild(text);
    if (!u.undone && u.source !== "undo") {
      const undo = document.createElement("button");
      undo.type = "button";
      undo.className = "button button-quiet button-small history-undo";
      undo.textContent = "Undo";
      undo.setAttribute("aria-label", "Undo the change of " + u.dimension);
      undo.addEventListener("click", () => undoChange(u.id, undo));
      item.appendChild(undo);
    }
    return item;
  }

  async function undoChange(id, button) {
    if (button) button.disabled = true;
    try {
      await api("POST", "/api/profile/history/" + id + "/undo/");
    } catch (err) {
      if (button) {
        button.disabled = false;
        button.title = err.message;
      }
    }
    await refreshProfile().catch(() => {});
  }

  window.SteerLab = {
    MODES, api, chatSocketUrl, csrfToken, renderMarkdown, renderProfile, refreshProfile, refreshHistory,
    strengthPercent, strengthSummary, undoChange,
  };
})();
