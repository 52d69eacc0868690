/* Batch page: live progress over WS /ws/batches/<id>/ (messages {"type": "progress"|"end", "status",
 * "counts", "passed", "total", "ended", "pass_at_k"}). The page is correct without it: the server
 * renders the same numbers, and a Refresh link reloads them. Values only ever reach the page as text.
 */
(function () {
  "use strict";

  var root = document.getElementById("batch-live");
  if (!root || !window.WebSocket || !window.Crucible) return;
  var FINAL = { completed: true, cancelled: true };
  var STOP_CODES = { 4400: true, 4401: true, 4403: true, 4404: true };
  var note = document.getElementById("batch-live-note");
  var status = root.getAttribute("data-status");
  if (FINAL[status]) return;

  function setText(id, value) {
    var el = document.getElementById(id);
    if (el && value !== undefined && value !== null) el.textContent = String(value);
  }

  function apply(message) {
    var bar = document.getElementById("batch-progress");
    if (bar && typeof message.total === "number" && typeof message.ended === "number") {
      bar.max = message.total;
      bar.value = message.ended;
      bar.textContent = message.ended + " of " + message.total;
    }
    setText("batch-ended", message.ended);
    setText("batch-total", message.total);
    setText("batch-passed", message.passed);
    if (typeof message.status === "string") {
      var badge = document.getElementById("batch-status");
      if (badge) {
        badge.textContent = message.status;
        badge.className = "badge batch-status batch-status--" + message.status.replace(/[^a-z_]/g, "");
      }
    }
    var counts = message.counts || {};
    Object.keys(counts).forEach(function (key) {
      root.querySelectorAll("[data-count]").forEach(function (cell) {
        if (cell.getAttribute("data-count") === key) cell.textContent = String(counts[key]);
      });
    });
    var passAtK = message.pass_at_k || {};
    Object.keys(passAtK).forEach(function (k) {
      root.querySelectorAll("[data-pass-at-k]").forEach(function (cell) {
        if (cell.getAttribute("data-pass-at-k") !== k) return;
        var value = passAtK[k];
        cell.textContent = typeof value === "number" ? value.toFixed(4) : "not computable yet";
      });
    });
  }

  function showFinished() {
    if (!note) return;
    note.textContent = "Finished. ";
    var link = document.createElement("a");
    link.href = window.location.pathname;
    link.textContent = "Reload for the per-task table and the failures";
    note.appendChild(link);
  }

  var ended = false;
  window.Crucible.connectLive({
    path: function () { return root.getAttribute("data-ws-path"); },
    onOpen: function () { if (note && !ended) note.textContent = "Live"; },
    onMessage: function (message) {
      if (message.type !== "progress" && message.type !== "end") return;
      apply(message);
      if (message.type === "end" || FINAL[message.status]) {
        ended = true;
        showFinished();
      }
    },
    onClose: function (event) {
      if (ended || STOP_CODES[event.code]) return false;
      if (note) note.textContent = "Reconnecting…";
    },
    delay: function (retries) { return Math.min(1000 * retries, 10000); }
  });
})();
