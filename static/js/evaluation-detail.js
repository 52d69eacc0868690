/* Evaluation detail: the live log over the WebSocket, live status, follow/pause scrolling.
 *
 * Sandbox output is hostile. It only ever reaches the page as text (text nodes and
 * textContent), never as HTML; log-viewer.js turns it into lines (colours, carriage returns,
 * line numbers, search, folds, timestamps).
 *
 * The stream protocol (architecture.md): the server replays stored chunks with seq > after,
 * then streams live ones. We remember the last seq we saw and reconnect with ?after=<it>,
 * so a dropped connection loses nothing and repeats nothing (we also ignore any seq we have
 * already seen, in case).
 *
 * 100 000 lines: messages are queued and handed to the viewer once per animation frame; the
 * viewer lays out only the blocks of lines near the screen and keeps at most its MAX_LINES on
 * the page (the full log stays downloadable).
 */
(function () {
  "use strict";

  var FOLLOW_SLACK_PX = 24;
  var CLOSE_REASONS = {
    4400: "The stream request was malformed.",
    4401: "You are signed out. Sign in again to watch this evaluation.",
    4403: "You may no longer watch this evaluation.",
    4404: "This evaluation does not exist (or is not yours)."
  };

  var log = document.getElementById("log");
  if (!log || !window.WebSocket || !window.Crucible || !window.CrucibleLogViewer) return;

  var connectionEl = document.getElementById("log-connection");
  var followBox = document.getElementById("log-follow");
  var jumpButton = document.getElementById("log-jump");
  var trimmedEl = document.getElementById("log-trimmed");
  var linesEl = document.getElementById("log-lines");
  var charsEl = document.getElementById("log-chars");
  var alertsEl = document.getElementById("log-alerts");

  var lastSeq = 0;
  var status = log.getAttribute("data-status");
  var activeAtLoad = status === "queued" || status === "running";
  var ended = false;
  var pending = [];
  var frameRequested = false;
  var follow = true;
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

  // A #L123 link opens the page at that line: do not follow the output away from it.
  var startAtLine = /^#L[0-9]+$/.test(window.location.hash);

  var viewer = window.CrucibleLogViewer.create(log, {
    onJump: function () { setFollow(false); },
    onTrim: function (lines) {
      if (!trimmedEl) return;
      trimmedEl.hidden = false;
      trimmedEl.textContent = "The first " + lines.toLocaleString() +
        " lines are no longer shown, to keep this page fast. The whole log downloads with the links above.";
    }
  });

  // At most FRAME_BUDGET_MS of output per frame (a replay of a long log arrives all at once); the
  // rest waits for the next frame, so the page keeps drawing and answering while it catches up.
  var FRAME_BUDGET_MS = 25;

  function render() {
    frameRequested = false;
    if (!pending.length) return;
    var started = window.performance.now();
    var wasAtBottom = atBottom();
    var done = 0;
    while (done < pending.length && window.performance.now() - started < FRAME_BUDGET_MS) {
      viewer.write(pending[done].stream, pending[done].data, pending[done].ts);
      done++;
    }
    pending = pending.slice(done);
    viewer.flush();
    keepFollowing(wasAtBottom);
    updateCounts();  // the footer's counts match what is on the page (the interval catches the rest)
    if (pending.length && !frameRequested) {
      frameRequested = true;
      window.requestAnimationFrame(render);
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

  function atBottom() {
    return log.scrollHeight - log.scrollTop - log.clientHeight <= FOLLOW_SLACK_PX;
  }

  // ``wasAtBottom``: where the reader was before this frame's output. If they scrolled up (and the
  // scroll event that stops following has not arrived yet), new output must not pull them back.
  function keepFollowing(wasAtBottom) {
    if (follow && wasAtBottom !== false) log.scrollTop = log.scrollHeight;
  }

  function setFollow(on) {
    follow = on;
    if (followBox) followBox.checked = on;
    if (jumpButton) jumpButton.hidden = on;
  }

  log.addEventListener("scroll", function () {
    var bottom = atBottom();
    if (bottom !== follow) setFollow(bottom);
  });
  if (followBox) {
    followBox.addEventListener("change", function () {
      setFollow(followBox.checked);
      keepFollowing();
    });
  }
  if (jumpButton) {
    jumpButton.addEventListener("click", function () {
      setFollow(true);
      keepFollowing();
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
      queue({
        stream: message.stream,
        data: typeof message.data === "string" ? message.data : "",
        ts: typeof message.ts === "string" ? message.ts : null
      });
    } else if (message.type === "status") {
      setStatus(message.status);
      if (!ended) setConnection("Live · " + humanStatus(message.status));
    } else if (message.type === "end") {
      ended = true;
      setStatus(message.status);
      // A run that ended while watched: fetch its final summary. One that had ended before the page
      // loaded is already shown as it ended (a refresh would close the artifact previews being opened).
      if (activeAtLoad) refreshSummary();
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

  setFollow(!startAtLine);
  connect();
})();
