/* Evaluation detail: the progress card and the artifact previews.
 *
 * The progress card (#progress) is server-rendered, re-fetched every 2 s while the run is queued
 * or running (and by htmx on each status change); between fetches this script advances the elapsed time each second, and
 * after each fetch copies the output so far and the peak memory into the summary.
 *
 * Artifact previews load when opened: text through the bounded JSON text endpoint, shown with
 * textContent (never as HTML); images through the image endpoint, which serves only PNG, JPEG,
 * GIF and WebP sniffed from their bytes.
 */
(function () {
  "use strict";

  var ticker = 0;

  function startTicking() {
    window.clearInterval(ticker);
    var card = document.getElementById("run-progress");
    if (!card) return;
    var loadedAt = Date.now();
    var elapsed = parseFloat(card.getAttribute("data-elapsed-s")) || 0;
    var timeout = parseFloat(card.getAttribute("data-timeout-s")) || 0;
    var text = document.getElementById("run-elapsed");
    var bar = document.getElementById("run-elapsed-bar");
    ticker = window.setInterval(function () {
      var now = elapsed + (Date.now() - loadedAt) / 1000;
      if (timeout) now = Math.min(now, timeout);
      if (text) text.textContent = String(Math.floor(now));
      if (bar) bar.value = now;
    }, 1000);
    copyToSummary(card);
  }

  function copyToSummary(card) {
    var output = document.querySelector('#summary [data-field="output"]');
    var peak = document.querySelector('#summary [data-field="peak_memory"]');
    if (output) output.textContent = card.getAttribute("data-output-text") + " so far";
    if (peak && card.getAttribute("data-peak-text") !== "—") peak.textContent = card.getAttribute("data-peak-text") + " so far";
  }

  // Polling: a plain fetch, quiet when the server is briefly away (the live log reconnects by
  // itself meanwhile); the card is our own server-rendered template, swapped in whole.
  var pollTimer = 0;

  function schedulePoll() {
    window.clearTimeout(pollTimer);
    var card = document.getElementById("progress");
    var seconds = card ? parseFloat(card.getAttribute("data-poll-s")) : 0;
    if (!seconds) return;
    pollTimer = window.setTimeout(function () {
      fetch(card.getAttribute("hx-get"), { credentials: "same-origin", headers: { "HX-Request": "true" } })
        .then(function (response) { return response.ok ? response.text() : null; })
        .then(function (html) {
          var current = document.getElementById("progress");
          if (html && current) {
            var holder = document.createElement("template");
            holder.innerHTML = html.trim();
            var fresh = holder.content.firstElementChild;
            if (fresh && fresh.id === "progress") {
              current.replaceWith(fresh);
              if (window.htmx) window.htmx.process(fresh);
              startTicking();
            }
          }
        })
        .catch(function () { /* the server is away: try again at the next tick */ })
        .then(schedulePoll);
    }, seconds * 1000);
  }

  document.body.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail && event.detail.elt;
    if (target && (target.id === "progress" || target.id === "summary")) {
      startTicking();
      bindPreviews();
      if (target.id === "progress") schedulePoll();
    }
  });

  // --- artifact previews ------------------------------------------------------------------

  function loadText(pre) {
    pre.removeAttribute("data-loading");
    fetch(pre.getAttribute("data-text-api"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      })
      .then(function (result) {
        if (!result.ok) {
          pre.textContent = result.body.detail || "No preview.";
          return;
        }
        pre.textContent = result.body.text;
        if (result.body.truncated) {
          var note = document.createElement("p");
          note.className = "muted artifact__note";
          note.textContent = "Only the beginning is shown; download the file for the rest.";
          pre.parentNode.appendChild(note);
        }
      })
      .catch(function () { pre.textContent = "The preview could not be loaded."; });
  }

  function bindPreviews() {
    var previews = document.querySelectorAll(".artifact__preview:not([data-bound])");
    for (var i = 0; i < previews.length; i++) {
      var details = previews[i];
      details.setAttribute("data-bound", "");
      details.addEventListener("toggle", function () {
        if (!this.open) return;
        var img = this.querySelector("img[data-src]");
        if (img) {
          img.src = img.getAttribute("data-src");
          img.removeAttribute("data-src");
        }
        var pre = this.querySelector("pre[data-text-api]:not([data-loaded])");
        if (pre) {
          pre.setAttribute("data-loaded", "");
          loadText(pre);
        }
      });
    }
  }

  startTicking();
  bindPreviews();
  schedulePoll();
})();
