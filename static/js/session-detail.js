/* Session page: the live transcript over the WebSocket, and the summary refreshed on status changes.
 *
 * Sandbox output, commands, paths and env names are hostile. They only ever reach the page as
 * text (createTextNode / textContent), never as HTML.
 *
 * The stream (architecture.md, Sessions): the server replays steps with seq > after, then streams
 * each step when it starts (status "running") and again when it is done. A step is drawn once and
 * replaced in place when a newer version arrives; a running version never replaces a done one. We
 * reconnect with ?after=<the highest seq up to which every step is done>, so a dropped connection
 * loses nothing (steps still running are sent again) and repeats nothing we keep.
 */
(function () {
  "use strict";

  var CLOSE_REASONS = {
    4400: "The stream request was malformed.",
    4401: "You are signed out. Sign in again to watch this session.",
    4403: "You may no longer watch this session.",
    4404: "This session does not exist (or is not yours)."
  };
  var FOLLOW_SLACK_PX = 48;

  var list = document.getElementById("transcript");
  if (!list || !window.WebSocket || !window.Crucible) return;

  var connectionEl = document.getElementById("transcript-connection");
  var emptyEl = document.getElementById("transcript-empty");
  var countEl = document.getElementById("transcript-count");
  var followBox = document.getElementById("transcript-follow");

  var steps = {};          // seq -> {status, element}
  var doneUpto = 0;        // every step up to this seq is shown done
  var status = list.getAttribute("data-status");
  var ended = false;
  var refreshTimer = 0;

  function setConnection(text) {
    if (connectionEl) connectionEl.textContent = text;
  }

  function human(value) {
    return String(value === null || value === undefined ? "" : value).replace(/_/g, " ");
  }

  function text(value) {
    return typeof value === "string" ? value : (value === null || value === undefined ? "" : String(value));
  }

  /* A shell-like rendering of argv, for reading only (never executed). */
  function quoteArg(arg) {
    arg = text(arg);
    if (arg !== "" && /^[A-Za-z0-9_@%+=:,.\/-]+$/.test(arg)) return arg;
    return "'" + arg.replace(/'/g, "'\\''") + "'";
  }

  function el(tag, className, content) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.appendChild(document.createTextNode(content));
    return node;
  }

  function bytes(n) {
    if (typeof n !== "number") return "";
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(1) + " KiB";
    return (n / 1024 / 1024).toFixed(1) + " MiB";
  }

  // --- one step -------------------------------------------------------------------------

  function headline(step) {
    if (step.kind === "exec") {
      var cmd = Array.isArray(step.cmd) ? step.cmd.map(quoteArg).join(" ") : "";
      return "$ " + cmd;
    }
    if (step.kind === "write_file") return "write " + text(step.path) + (typeof step.size === "number" ? " (" + bytes(step.size) + ")" : "");
    if (step.kind === "read_file") return "read " + text(step.path) + (typeof step.size === "number" ? " (" + bytes(step.size) + ")" : "");
    return human(step.kind);
  }

  function outcome(step) {
    if (step.status !== "done") return "running…";
    if (step.error) return "error: " + human(step.error) + (step.error_message ? " (" + text(step.error_message) + ")" : "");
    if (step.timed_out) return "timed out";
    if (step.kind === "exec") return "exit " + (step.returncode === null || step.returncode === undefined ? "—" : step.returncode);
    return "done";
  }

  function detailsLine(step) {
    var parts = [];
    if (step.cwd) parts.push("cwd " + text(step.cwd));
    if (step.user) parts.push("user " + text(step.user));
    if (Array.isArray(step.env_names) && step.env_names.length) parts.push("env " + step.env_names.map(text).join(", "));
    if (step.input_bytes) parts.push("input " + bytes(step.input_bytes));
    if (typeof step.duration_ms === "number") parts.push(step.duration_ms + " ms");
    if (step.truncated) parts.push("output truncated");
    if (step.started_at) parts.push("started " + text(step.started_at).replace("T", " ").replace(/\.\d+/, ""));
    return parts.join(" · ");
  }

  function stream(step, name) {
    var data = text(step[name]);
    var produced = step[name + "_bytes"];
    if (!data && !produced) return null;
    var wrap = el("div", "step__stream step__stream--" + name);
    var label = name + (typeof produced === "number" ? " · " + bytes(produced) : "");
    if (typeof produced === "number" && produced > 0 && data.length < produced) label += " (transcript keeps the beginning)";
    wrap.appendChild(el("div", "step__stream-label", label));
    wrap.appendChild(el("pre", "step__output", data));
    return wrap;
  }

  function build(step) {
    var item = el("li", "step step--" + (step.status === "done" ? "done" : "running"));
    item.setAttribute("data-seq", String(step.seq));
    item.setAttribute("data-status", step.status === "done" ? "done" : "running");
    var head = el("div", "step__head");
    head.appendChild(el("span", "step__seq", "#" + step.seq));
    head.appendChild(el("code", "step__cmd", headline(step)));
    var result = el("span", "step__outcome", outcome(step));
    if (step.status === "done" && (step.error || step.timed_out || (step.kind === "exec" && step.returncode !== 0))) {
      result.className += " step__outcome--bad";
    }
    head.appendChild(result);
    item.appendChild(head);
    var meta = detailsLine(step);
    if (meta) item.appendChild(el("div", "step__meta", meta));
    ["stdout", "stderr"].forEach(function (name) {
      var node = stream(step, name);
      if (node) item.appendChild(node);
    });
    return item;
  }

  function atBottom() {
    return window.innerHeight + window.scrollY >= document.body.scrollHeight - FOLLOW_SLACK_PX;
  }

  function show(step) {
    if (!step || typeof step.seq !== "number") return;
    var known = steps[step.seq];
    if (known && known.status === "done") return; // a done step is final
    if (known && step.status !== "done") return;  // running again: nothing new
    var follow = followBox && followBox.checked && atBottom();
    var item = build(step);
    if (known) {
      list.replaceChild(item, known.element);
    } else {
      // Keep the list in seq order whatever order versions arrive in.
      var before = null;
      for (var node = list.lastElementChild; node; node = node.previousElementSibling) {
        if (Number(node.getAttribute("data-seq")) < step.seq) break;
        before = node;
      }
      list.insertBefore(item, before);
    }
    steps[step.seq] = { status: step.status === "done" ? "done" : "running", element: item };
    while (steps[doneUpto + 1] && steps[doneUpto + 1].status === "done") doneUpto++;
    if (emptyEl) emptyEl.hidden = true;
    if (countEl) countEl.textContent = String(list.children.length);
    // The summary is re-fetched on status changes only; its step count follows the stream.
    var stepCount = document.querySelector('#summary [data-field="step_count"]');
    if (stepCount && Number(stepCount.textContent) < step.seq) stepCount.textContent = String(step.seq);
    if (follow) item.scrollIntoView({ block: "end" });
  }

  /* After the end: a step the sandbox was killed in the middle of is finished a moment after the
   * end is published; read the stored transcript once so the page shows its final version. */
  function settleRunning() {
    var running = Object.keys(steps).filter(function (seq) { return steps[seq].status !== "done"; });
    if (!running.length) return;
    var after = Math.min.apply(null, running.map(Number)) - 1;
    window.setTimeout(function () {
      window.fetch(list.getAttribute("data-transcript-api") + "?after=" + after, {
        credentials: "same-origin",
        headers: { Accept: "application/json" }
      }).then(function (response) {
        return response.ok ? response.json() : null;
      }).then(function (body) {
        if (body && Array.isArray(body.steps)) body.steps.forEach(show);
      }).catch(function () {});
    }, 1000);
  }

  // --- status ---------------------------------------------------------------------------

  function refreshSummary() {
    window.clearTimeout(refreshTimer);
    refreshTimer = window.setTimeout(function () {
      document.body.dispatchEvent(new CustomEvent("crucible:refresh"));
    }, 150);
  }

  function setStatus(value) {
    if (value === status) return;
    status = value;
    list.setAttribute("data-status", value);
    refreshSummary();
  }

  function handle(message) {
    if (message.type === "step") {
      show(message.step);
    } else if (message.type === "status") {
      setStatus(message.status);
      if (!ended) setConnection("Live · " + human(message.status));
    } else if (message.type === "end") {
      ended = true;
      setStatus(message.status);
      refreshSummary();
      setConnection("Ended: " + human(message.end_reason || message.status));
      settleRunning();
    }
  }

  var lastClose = null;

  window.Crucible.connectLive({
    path: function () { return list.getAttribute("data-ws-path") + "?after=" + doneUpto; },
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
      setConnection(lastClose === 4429 ? "Too many live views open in other tabs; retrying…" : "Connection lost; reconnecting…");
    },
    delay: function (retries) { return Math.min(5000, 200 * Math.pow(2, retries)); }
  });
})();
