/* Crucible: small progressive enhancements, and the WebSocket reconnect loop the live pages share.
 * Loaded as a file on every page, before the page's own scripts (strict CSP: no inline script). */
(function () {
  "use strict";

  /* A WebSocket to this host that reconnects after a drop, with a growing delay.
   *
   * options.path()          the path (and query) to connect to; called again before each reconnect,
   *                         so a page can resume where it stopped (?after=<last seq>)
   * options.onMessage(msg)  each message, parsed from JSON (malformed ones are ignored)
   * options.onOpen()        each time a connection opens
   * options.onClose(event)  each close; return false to stop reconnecting (e.g. a final close code)
   * options.onRetry(ms)     before waiting ms to reconnect
   * options.delay(retries)  ms to wait before reconnect number `retries` (1, 2, ...)
   */
  function connectLive(options) {
    var retries = 0;

    function connect() {
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      var socket = new WebSocket(scheme + window.location.host + options.path());
      socket.addEventListener("open", function () {
        retries = 0;
        if (options.onOpen) options.onOpen();
      });
      socket.addEventListener("message", function (event) {
        var message;
        try {
          message = JSON.parse(event.data);
        } catch (e) {
          return;
        }
        options.onMessage(message);
      });
      socket.addEventListener("close", function (event) {
        if (options.onClose && options.onClose(event) === false) return;
        retries++;
        var wait = options.delay(retries);
        if (options.onRetry) options.onRetry(wait);
        window.setTimeout(connect, wait);
      });
    }

    connect();
  }

  window.Crucible = window.Crucible || {};
  window.Crucible.connectLive = connectLive;

  // "Copy" buttons: data-copy-target="<input id>". Without JS the key is still selectable.
  function setupCopyButtons() {
    document.querySelectorAll("[data-copy-target]").forEach(function (button) {
      button.addEventListener("click", function () {
        var input = document.getElementById(button.getAttribute("data-copy-target"));
        var status = document.querySelector("[data-copy-status]");
        if (!input) return;
        input.select();
        var done = function () {
          button.textContent = "Copied";
          if (status) status.textContent = "The key is on your clipboard.";
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(input.value).then(done, function () {
            if (status) status.textContent = "Select the key and copy it by hand.";
          });
        } else {
          try {
            document.execCommand("copy");
            done();
          } catch (e) {
            if (status) status.textContent = "Select the key and copy it by hand.";
          }
        }
      });
    });
    // Select the whole key when the field gets focus, so a keyboard user can copy it at once.
    document.querySelectorAll("[data-token-key]").forEach(function (input) {
      input.addEventListener("focus", function () { input.select(); });
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setupCopyButtons);
  } else {
    setupCopyButtons();
  }
})();
