// The readout under an answer: one small gauge per dimension (−1 … +1, the dimension's two
// reference ends), how the answer reads as the model itself represents it; a button shows,
// on demand, how each reading moved token by token. Built with DOM calls and textContent only.
(function () {
  "use strict";

  const SVG = "http://www.w3.org/2000/svg";
  const clamp = (v) => Math.max(-1, Math.min(1, v));
  const signed = (v) => (v > 0 ? "+" : v < 0 ? "−" : "") + Math.abs(v).toFixed(2);

  function ends(labels, name) {
    return labels[name] || ["−" + name, "+" + name];
  }

  function gauge(name, value, labels) {
    const [low, high] = ends(labels, name);
    const row = document.createElement("div");
    row.className = "readout-row";
    row.dataset.dimension = name;
    const left = document.createElement("span");
    left.className = "readout-end readout-low";
    left.textContent = low;
    const track = document.createElement("span");
    track.className = "readout-track";
    track.setAttribute("role", "img");
    const toward = value > 0 ? high : low;
    track.setAttribute("aria-label", low + " to " + high + ": reads " + signed(value) + (value ? " (toward " + toward + ")" : ""));
    const mark = document.createElement("span");
    mark.className = "readout-mark";
    mark.style.left = ((clamp(value) + 1) * 50).toFixed(1) + "%";
    track.appendChild(mark);
    const right = document.createElement("span");
    right.className = "readout-end readout-high";
    right.textContent = high;
    const number = document.createElement("span");
    number.className = "readout-value";
    number.textContent = signed(value);
    row.append(left, track, right, number);
    return row;
  }

  // The mean of each window of `size` tokens around each token: single tokens swing far past
  // the ends (a token's own reading depends on the token), the trend is what a reader looks for.
  function runningMean(values, size) {
    return values.map((_, i) => {
      const part = values.slice(Math.max(0, i - size + 1), i + 1);
      return part.reduce((a, b) => a + b, 0) / part.length;
    });
  }

  // One chart per dimension across the answer's tokens: each token faint, the running mean of
  // 8 bold, on a scale that holds the largest reading (never less than −1 … +1, the ends dashed).
  function sparkline(name, values, labels) {
    const [low, high] = ends(labels, name);
    const width = 240, height = 36;
    const extent = Math.max(1, ...values.map((v) => Math.abs(v)));
    const y = (v) => ((1 - v / extent) * height / 2).toFixed(1);
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("class", "readout-spark");
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", name + " per token, from " + signed(values[0]) + " to " + signed(values[values.length - 1]) +
      " (" + low + " −1, " + high + " +1)");
    const zero = document.createElementNS(SVG, "line");
    zero.setAttribute("x1", "0"); zero.setAttribute("x2", String(width));
    zero.setAttribute("y1", String(height / 2)); zero.setAttribute("y2", String(height / 2));
    zero.setAttribute("class", "readout-zero");
    const step = values.length > 1 ? width / (values.length - 1) : 0;
    const polyline = (series, css) => {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", series.map((v, i) => (i * step).toFixed(1) + "," + y(v)).join(" "));
      line.setAttribute("class", css);
      return line;
    };
    const endLines = [-1, 1].map((v) => {
      const end = document.createElementNS(SVG, "line");
      end.setAttribute("x1", "0"); end.setAttribute("x2", String(width));
      end.setAttribute("y1", y(v)); end.setAttribute("y2", y(v));
      end.setAttribute("class", "readout-end-line");
      return end;
    });
    svg.append(zero, ...endLines, polyline(values, "readout-line-token"), polyline(runningMean(values, 8), "readout-line"));
    const row = document.createElement("div");
    row.className = "readout-tokens-row";
    const label = document.createElement("span");
    label.className = "readout-end";
    label.textContent = low + " ↔ " + high;
    row.append(label, svg);
    return row;
  }

  // `readout`: {dimensions, mean: {dimension: value}, tokens: [[value per dimension] …]}.
  function showReadout(item, readout, labels) {
    if (!readout || !readout.dimensions || !readout.dimensions.length) return;
    const old = item.querySelector(".chat-readout");
    if (old) old.remove();
    const box = document.createElement("div");
    box.className = "chat-readout";
    const title = document.createElement("span");
    title.className = "readout-title";
    title.textContent = "How it reads";
    title.title = "The answer's mean reading on each dimension, as the model represents it: −1 and +1 are the " +
      "dimension's reference ends. What steering added is left out of the reading.";
    box.appendChild(title);
    const gauges = document.createElement("div");
    gauges.className = "readout-gauges";
    for (const name of readout.dimensions) {
      const value = readout.mean[name];
      if (typeof value === "number") gauges.appendChild(gauge(name, value, labels));
    }
    box.appendChild(gauges);
    const tokens = readout.tokens || [];
    if (tokens.length > 1) {
      const toggle = document.createElement("button");
      toggle.type = "button";
      toggle.className = "button button-quiet button-small readout-toggle";
      toggle.textContent = "Per token";
      toggle.setAttribute("aria-expanded", "false");
      const detail = document.createElement("div");
      detail.className = "readout-tokens";
      detail.hidden = true;
      toggle.addEventListener("click", function () {
        if (!detail.childElementCount) {
          readout.dimensions.forEach(function (name, i) {
            detail.appendChild(sparkline(name, tokens.map((values) => values[i]), labels));
          });
        }
        detail.hidden = !detail.hidden;
        toggle.setAttribute("aria-expanded", String(!detail.hidden));
      });
      box.append(toggle, detail);
    }
    const steering = item.querySelector(".chat-steering");
    (steering || item.lastElementChild).after(box);
  }

  window.SteerLab = Object.assign(window.SteerLab || {}, { showReadout: showReadout });
})();
