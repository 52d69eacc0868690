/* Batch page: live progress over WS /ws/batches/<id>/ (messages {"type": "progress"|"end", "status",
 * "counts", "passed", "total", "ended", "pass_at_k"}). The page is correct without it: the server
 * renders the same numbers, and a Refresh link reloads them. Values only ever reach the page as text.
 */
(function () {
  "use strict";

  var root = document.getElementById("batch-live");
  if (!root || !window.WebSocket || !window.Crucible) return;
  var FINAL = { completed: true, cancelled: true };
  var STOP_CODES = {
    4400: "the request was malformed",
    4401: "you are signed out",
    4403: "you may no longer watch this batch",
    4404: "live updates are not available for this batch"
  };
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

  // A note, then a link that reloads the page (the server renders everything the stream does not).
  function showNote(text, linkText) {
    if (!note) return;
    note.textContent = text + " ";
    var link = document.createElement("a");
    link.href = window.location.pathname;
    link.textContent = linkText;
    note.appendChild(link);
  }

  var ended = false;
  window.Crucible.connectLive({
    path: function () { return root.getAttribute("data-ws-path"); },
    onMessage: function (message) {
      if (message.type !== "progress" && message.type !== "end") return;
      apply(message);
      if (message.type === "end" || FINAL[message.status]) {
        ended = true;
        showNote("Finished.", "Reload for the per-task table and the failures");
      } else if (note) {
        note.textContent = "Live";
      }
    },
    onClose: function (event) {
      if (ended) return false;
      if (STOP_CODES[event.code]) {
        showNote("Not live: " + STOP_CODES[event.code] + ".", "Refresh");
        return false;
      }
      showNote("Reconnecting…", "Refresh");
    },
    delay: function (retries) { return Math.min(1000 * retries, 10000); }
  });
})();
