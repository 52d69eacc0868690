/* Evaluation detail: the live log over the WebSocket, live status, follow/pause scrolling.
 *
 * Sandbox output is hostile. It only ever reaches the page as text (text nodes and
 * textContent), never as HTML.
 *
 * The stream protocol (architecture.md): the server replays stored chunks with seq > after,
 * then streams live ones. We remember the last seq we saw and reconnect with ?after=<it>,
 * so a dropped connection loses nothing and repeats nothing (we also ignore any seq we have
 * already seen, in case).
 *
 * 100 000 lines: messages are queued and rendered once per animation frame; consecutive
 * chunks of the same stream are appended to one text node, so the DOM holds one node per
 * stdout/stderr switch, not one per line; and only the newest MAX_NODES nodes / MAX_CHARS
 * characters stay on the page (the full log stays available from the API).
 */
(function () {
  "use strict";

  var MAX_NODES = 5000;
  var MAX_CHARS = 4000000;
  var FOLLOW_SLACK_PX = 24;
  var CLOSE_REASONS = {
    4400: "The stream request was malformed.",
    4401: "You are signed out. Sign in again to watch this evaluation.",
    4403: "You may no longer watch this evaluation.",
    4404: "This evaluation does not exist (or is not yours)."
  };

  var log = document.getElementById("log");
  if (!log || !window.WebSocket || !window.Crucible) return;

  var connectionEl = document.getElementById("log-connection");
  var followBox = document.getElementById("log-follow");
  var jumpButton = document.getElementById("log-jump");
  var trimmedEl = document.getElementById("log-trimmed");
  var linesEl = document.getElementById("log-lines");
  var charsEl = document.getElementById("log-chars");
  var alertsEl = document.getElementById("log-alerts");

  var lastSeq = 0;
  var status = log.getAttribute("data-status");
  var ended = false;
  var pending = [];
  var frameRequested = false;
  var follow = true;
  var renderedChars = 0;
  var trimmedChars = 0;
  var lineCount = 0;
  var charCount = 0;
  var refreshTimer = 0;

  function setConnection(text) {
    if (connectionEl) connectionEl.textContent = text;
  }

  function humanStatus(value) {
    return String(value || "").replace(/_/g, " ");
  }

  // --- rendering ------------------------------------------------------------------------

  function countLines(text) {
    var n = 0;
    for (var i = text.indexOf("\n"); i !== -1; i = text.indexOf("\n", i + 1)) n++;
    return n;
  }

  function render() {
    frameRequested = false;
    if (!pending.length) return;
    var batch = pending;
    pending = [];

    // Whatever would be trimmed at once anyway is never built (e.g. a background tab caught up).
    var total = 0;
    var first = batch.length;
    while (first > 0 && total < MAX_CHARS) {
      first--;
      total += batch[first].data.length;
    }
    for (var k = 0; k < first; k++) trimmedChars += batch[k].data.length;

    var fragment = document.createDocumentFragment();
    var tail = log.lastChild;
    var tailStream = tail ? tail.getAttribute("data-stream") : null;
    var target = null;
    for (var i = first; i < batch.length; i++) {
      var chunk = batch[i];
      if (!chunk.data) continue;
      if (target === null && tail && tailStream === chunk.stream) {
        tail.firstChild.appendData(chunk.data); // same stream as the last node: extend its text
      } else if (target && target.getAttribute("data-stream") === chunk.stream) {
        target.firstChild.appendData(chunk.data);
      } else {
        target = document.createElement("span");
        target.className = "log__chunk log__chunk--" + (chunk.stream === "stderr" ? "stderr" : "stdout");
        target.setAttribute("data-stream", chunk.stream);
        target.appendChild(document.createTextNode(chunk.data));
        fragment.appendChild(target);
        tail = null;
      }
      renderedChars += chunk.data.length;
    }
    log.appendChild(fragment);
    trim();
    if (follow) log.scrollTop = log.scrollHeight;
  }

  function trim() {
    while (log.childNodes.length > 1 && (log.childNodes.length > MAX_NODES || renderedChars > MAX_CHARS)) {
      var removed = log.firstChild.textContent.length;
      log.removeChild(log.firstChild);
      renderedChars -= removed;
      trimmedChars += removed;
    }
    if (renderedChars > MAX_CHARS && log.firstChild) {
      // One huge node: cut its beginning at a line boundary.
      var text = log.firstChild.firstChild;
      var cut = text.data.indexOf("\n", renderedChars - MAX_CHARS);
      cut = cut === -1 ? renderedChars - MAX_CHARS : cut + 1;
      text.deleteData(0, cut);
      renderedChars -= cut;
      trimmedChars += cut;
    }
    if (trimmedChars && trimmedEl) {
      trimmedEl.hidden = false;
      trimmedEl.textContent = "The first " + trimmedChars.toLocaleString() +
        " characters are no longer shown, to keep this page fast. The full log is available from the API (link below).";
    }
  }

  function queue(message) {
    pending.push(message);
    lineCount += countLines(message.data);
    charCount += message.data.length;
    if (!frameRequested) {
      frameRequested = true;
      window.requestAnimationFrame(render);
    }
  }

  function updateCounts() {
    if (linesEl) linesEl.textContent = lineCount.toLocaleString();
    if (charsEl) charsEl.textContent = charCount.toLocaleString();
  }
  window.setInterval(updateCounts, 500);

  // --- following ------------------------------------------------------------------------

  function setFollow(on) {
    follow = on;
    if (followBox) followBox.checked = on;
    if (jumpButton) jumpButton.hidden = on;
  }

  log.addEventListener("scroll", function () {
    var atBottom = log.scrollHeight - log.scrollTop - log.clientHeight <= FOLLOW_SLACK_PX;
    if (atBottom !== follow) setFollow(atBottom);
  });
  if (followBox) {
    followBox.addEventListener("change", function () {
      setFollow(followBox.checked);
      if (follow) log.scrollTop = log.scrollHeight;
    });
  }
  if (jumpButton) {
    jumpButton.addEventListener("click", function () {
      setFollow(true);
      log.scrollTop = log.scrollHeight;
      log.focus();
    });
  }

  // --- status ---------------------------------------------------------------------------

  function refreshSummary() {
    // The summary (status badge, timings, peaks, artifacts, buttons) is server-rendered; htmx
    // re-fetches it on this event. Coalesce bursts (a status and an end arrive together).
    window.clearTimeout(refreshTimer);
    refreshTimer = window.setTimeout(function () {
      document.body.dispatchEvent(new CustomEvent("crucible:refresh"));
    }, 150);
  }

  function setStatus(value) {
    if (value === status) return;
    status = value;
    log.setAttribute("data-status", value);
    document.title = document.title.replace(/^\[[^\]]*\] /, "");
    document.title = "[" + humanStatus(value) + "] " + document.title;
    refreshSummary();
  }

  function showAlert(message) {
    if (!alertsEl) return;
    var item = document.createElement("li");
    var text = message.message || message.rule || message.kind || "";
    item.textContent = "Safety alert: " + (typeof text === "string" ? text : JSON.stringify(message));
    alertsEl.appendChild(item);
    alertsEl.hidden = false;
  }

  // --- the connection -------------------------------------------------------------------

  function handle(message) {
    if (message.type === "log") {
      if (typeof message.seq !== "number" || message.seq <= lastSeq) return;
      lastSeq = message.seq;
      queue({ stream: message.stream, data: typeof message.data === "string" ? message.data : "" });
    } else if (message.type === "status") {
      setStatus(message.status);
      if (!ended) setConnection("Live · " + humanStatus(message.status));
    } else if (message.type === "end") {
      ended = true;
      setStatus(message.status);
      refreshSummary();
      var code = message.exit_code === null || message.exit_code === undefined ? "" : ", exit code " + message.exit_code;
      setConnection("Finished: " + humanStatus(message.status) + code);
    } else if (message.type === "alert") {
      showAlert(message);
    } else if (message.type === "sample") {
      // Resource samples are drawn by monitoring-resources.js (it listens for this event).
      document.dispatchEvent(new CustomEvent("crucible:sample", { detail: message }));
    }
  }

  var lastClose = null;

  function connect() {
    window.Crucible.connectLive({
      path: function () { return log.getAttribute("data-ws-path") + "?after=" + lastSeq; },
      onOpen: function () { setConnection("Live"); },
      onMessage: handle,
      onClose: function (event) {
        if (ended) return false;
        if (CLOSE_REASONS[event.code]) {
          setConnection(CLOSE_REASONS[event.code]);
          return false;
        }
        lastClose = event.code;
        return true;
      },
      onRetry: function () {
        // 4429: this user already has the most live views allowed open (other tabs); one frees up when they close.
        setConnection(lastClose === 4429 ? "Too many live views open in other tabs; retrying…" : "Connection lost; reconnecting…");
      },
      delay: function (retries) { return Math.min(5000, 200 * Math.pow(2, retries)); }
    });
  }

  setFollow(true);
  connect();
})();
