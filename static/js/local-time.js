/* Times in the viewer's own time zone, labelled with it.
 *
 * The server writes every moment as <time datetime="ISO">2026-05-04 14:03:07 UTC</time>: correct, and
 * what is shown without JavaScript. This rewrites each one to local time with the zone's name
 * ("2026-05-04 16:03:07 CEST"), keeping the UTC text in a tooltip. <time data-relative> reads as a
 * relative time ("3 min ago") with the local time in its tooltip, and stays current. Times added later
 * (htmx swaps, live updates) are handled too. Loaded on every page (strict CSP: a file, no inline script).
 */
(function () {
  "use strict";

  var RELATIVE_REFRESH_MS = 30000;
  var parts;
  try {
    parts = new Intl.DateTimeFormat(undefined, {
      year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit",
      hourCycle: "h23", timeZoneName: "short"
    });
  } catch (e) {
    return; // no Intl: the UTC text, labelled, stays
  }
  var relative = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;

  function localText(date, withSeconds) {
    var p = {};
    parts.formatToParts(date).forEach(function (part) { p[part.type] = part.value; });
    var time = p.hour + ":" + p.minute + (withSeconds ? ":" + p.second : "");
    return p.year + "-" + p.month + "-" + p.day + " " + time + " " + (p.timeZoneName || "");
  }

  function relativeText(date) {
    var seconds = Math.round((date.getTime() - Date.now()) / 1000);
    var steps = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];
    for (var i = 0; i < steps.length; i++) {
      if (Math.abs(seconds) >= steps[i][1]) return relative.format(Math.round(seconds / steps[i][1]), steps[i][0]);
    }
    return Math.abs(seconds) < 10 ? "just now" : relative.format(seconds, "second");
  }

  function enhance(element) {
    var date = new Date(element.getAttribute("datetime"));
    if (isNaN(date.getTime())) return;
    if (!element.hasAttribute("data-local")) {
      element.setAttribute("data-utc", element.textContent.trim());
      element.setAttribute("data-local", /\d\d:\d\d:\d\d/.test(element.textContent) ? "seconds" : "minutes");
    }
    var local = localText(date, element.getAttribute("data-local") === "seconds").trim();
    if (element.hasAttribute("data-relative") && relative) {
      element.textContent = relativeText(date);
      element.title = local + " (" + element.getAttribute("data-utc") + ")";
    } else {
      element.textContent = local;
      element.title = element.getAttribute("data-utc");
    }
  }

  function enhanceAll(root) {
    var scope = root && root.querySelectorAll ? root : document;
    if (scope.matches && scope.matches("time[datetime]")) enhance(scope);
    Array.prototype.forEach.call(scope.querySelectorAll("time[datetime]:not([data-local])"), enhance);
  }

  function refreshRelative() {
    Array.prototype.forEach.call(document.querySelectorAll("time[datetime][data-relative]"), enhance);
  }

  function start() {
    enhanceAll(document);
    new MutationObserver(function (mutations) {
      mutations.forEach(function (mutation) {
        Array.prototype.forEach.call(mutation.addedNodes, function (node) {
          if (node.nodeType === 1) enhanceAll(node);
        });
      });
    }).observe(document.body, { childList: true, subtree: true });
    window.setInterval(refreshRelative, RELATIVE_REFRESH_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
