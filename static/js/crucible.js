/* Crucible: small progressive enhancements. Loaded as a file (strict CSP: no inline script). */
(function () {
  "use strict";

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
