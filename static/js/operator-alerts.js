/* Live safety alerts for operators, on every page (loaded only for operators; strict CSP: a file,
 * no inline script, URLs read from data- attributes of #operator-alerts).
 *
 * WS /ws/alerts/ sends {"type":"alerts","unacknowledged":N} on connect, then
 * {"type":"alert", rule, severity, message, evidence, evaluation_id, created_at, unacknowledged}
 * for each alert raised. The header badge shows the count; each alert shows a small toast in the
 * polite live region #alert-toasts. Alert text comes from sandbox output: it is only ever put in
 * the page with textContent.
 */
(function () {
  "use strict";

  var root = document.getElementById("operator-alerts");
  var toasts = document.getElementById("alert-toasts");
  if (!root || !toasts || !window.WebSocket || !window.Crucible) return;

  var wsPath = root.getAttribute("data-ws-path");
  var alertsUrl = root.getAttribute("data-alerts-url");
  var evaluationUrl = root.getAttribute("data-evaluation-url") || "";
  var PLACEHOLDER = "00000000-0000-0000-0000-000000000000";
  var UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
  var MAX_TOASTS = 3;
  var TOAST_MS = 20000;
  var FINAL_CLOSES = { 4401: true, 4403: true }; // signed out or not an operator: do not retry

  function setCount(n) {
    n = Math.max(0, parseInt(n, 10) || 0);
    root.setAttribute("data-unacknowledged", String(n));
    var badge = document.getElementById("alert-badge");
    if (n === 0) {
      if (badge) {
        if (badge.previousSibling && badge.previousSibling.nodeType === 3) root.removeChild(badge.previousSibling);
        root.removeChild(badge);
      }
      return;
    }
    if (!badge) {
      badge = document.createElement("a");
      badge.id = "alert-badge";
      badge.className = "alert-badge";
      badge.href = alertsUrl;
      badge.title = "Unacknowledged safety alerts";
      root.appendChild(document.createTextNode(" "));
      root.appendChild(badge);
    }
    while (badge.firstChild) badge.removeChild(badge.firstChild);
    badge.appendChild(document.createTextNode(String(n)));
    var hidden = document.createElement("span");
    hidden.className = "visually-hidden";
    hidden.textContent = " unacknowledged alert" + (n === 1 ? "" : "s");
    badge.appendChild(hidden);
  }

  function text(value, max) {
    var s = value == null ? "" : String(value);
    return s.length > max ? s.slice(0, max - 1) + "…" : s;
  }

  function removeToast(toast) {
    if (toast.parentNode) toast.parentNode.removeChild(toast);
  }

  function showToast(alert) {
    var severity = /^[a-z]+$/.test(alert.severity || "") ? alert.severity : "info";
    var toast = document.createElement("div");
    toast.className = "alert-toast alert-toast--" + severity;

    var title = document.createElement("p");
    title.className = "alert-toast__title";
    var strong = document.createElement("strong");
    strong.textContent = "Safety alert: " + text(alert.rule, 64);
    title.appendChild(strong);
    title.appendChild(document.createTextNode(" (" + severity + ")"));
    toast.appendChild(title);

    if (alert.message) {
      var message = document.createElement("p");
      message.className = "alert-toast__message";
      message.textContent = text(alert.message, 160);
      toast.appendChild(message);
    }

    var actions = document.createElement("p");
    actions.className = "alert-toast__actions";
    if (UUID.test(alert.evaluation_id || "") && evaluationUrl.indexOf(PLACEHOLDER) !== -1) {
      var link = document.createElement("a");
      link.href = evaluationUrl.replace(PLACEHOLDER, alert.evaluation_id.toLowerCase());
      link.textContent = "View evaluation " + alert.evaluation_id.slice(0, 8);
      actions.appendChild(link);
      actions.appendChild(document.createTextNode(" "));
    }
    var dismiss = document.createElement("button");
    dismiss.type = "button";
    dismiss.className = "link-button alert-toast__dismiss";
    dismiss.textContent = "Dismiss";
    dismiss.addEventListener("click", function () { removeToast(toast); });
    actions.appendChild(dismiss);
    toast.appendChild(actions);

    toasts.appendChild(toast);
    while (toasts.children.length > MAX_TOASTS) toasts.removeChild(toasts.firstElementChild);

    // Leave it up while the pointer or focus is on it, so it can be read and its link used.
    var timer = null;
    function schedule() {
      window.clearTimeout(timer);
      timer = window.setTimeout(function () { removeToast(toast); }, TOAST_MS);
    }
    toast.addEventListener("mouseenter", function () { window.clearTimeout(timer); });
    toast.addEventListener("mouseleave", schedule);
    toast.addEventListener("focusin", function () { window.clearTimeout(timer); });
    toast.addEventListener("focusout", schedule);
    schedule();
  }

  function handle(message) {
    if (!message || typeof message !== "object") return;
    if (message.type === "alerts") {
      setCount(message.unacknowledged);
    } else if (message.type === "alert") {
      if (message.unacknowledged != null) setCount(message.unacknowledged);
      showToast(message);
      document.dispatchEvent(new CustomEvent("crucible:operator-alert", { detail: message }));
    }
  }

  function connect() {
    window.Crucible.connectLive({
      path: function () { return wsPath; },
      onMessage: handle,
      onClose: function (event) { return !FINAL_CLOSES[event.code]; },
      delay: function (retries) {
        var delay = Math.min(30000, 500 * Math.pow(2, Math.min(retries, 6)));
        return delay / 2 + Math.random() * delay / 2;
      }
    });
  }

  connect();
})();
