/* Resource graphs on the evaluation page: CPU, memory, processes and output rate over time.
 *
 * Stored samples come from GET /api/v1/evaluations/{id}/samples/; live ones arrive over the page's
 * WebSocket as {"type":"sample",...} messages, which evaluation-detail.js re-dispatches as a
 * "crucible:sample" DOM event (one connection per page). Plain SVG built with the DOM API: no
 * library, no inline style, only numbers from the server are drawn.
 */
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var W = 300;
  var H = 80;
  var MAX_SAMPLES = 3600;
  var root = document.getElementById("resources");
  if (!root) return;
  var chartsEl = document.getElementById("resource-charts");
  var emptyEl = document.getElementById("resources-empty");

  function bytes(n) {
    var units = ["B", "KiB", "MiB", "GiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(Math.round(n))) + " " + units[i];
  }

  var SERIES = [
    { key: "cpu_percent", label: "CPU", limit: "cpu_percent", format: function (v) { return Math.round(v) + "%"; } },
    { key: "memory_bytes", label: "Memory", limit: "memory_bytes", format: bytes },
    { key: "pids", label: "Processes", limit: "pids", format: function (v) { return String(Math.round(v)); } },
    { key: "output_bytes_per_s", label: "Output", limit: null, format: function (v) { return bytes(v) + "/s"; } }
  ];

  var samples = [];
  var seen = {};
  var limits = {};
  var frame = false;

  function el(name, attrs) {
    var node = document.createElementNS(SVG, name);
    for (var key in attrs) node.setAttribute(key, attrs[key]);
    return node;
  }

  SERIES.forEach(function (series) {
    var figure = document.createElement("figure");
    figure.className = "resource-chart";
    figure.setAttribute("data-series", series.key);
    var caption = document.createElement("figcaption");
    var name = document.createElement("span");
    name.textContent = series.label;
    var value = document.createElement("span");
    value.className = "resource-chart__value";
    value.textContent = "—";
    caption.appendChild(name);
    caption.appendChild(value);
    var svg = el("svg", { viewBox: "0 0 " + W + " " + H, preserveAspectRatio: "none", role: "img" });
    var title = el("title", {});
    title.textContent = series.label + " over time";
    svg.appendChild(title);
    series.area = el("polygon", { "class": "area", points: "" });
    series.line = el("polyline", { "class": "line", points: "" });
    series.limitLine = el("line", { "class": "limit", x1: 0, x2: W, y1: -10, y2: -10 });
    svg.appendChild(series.area);
    svg.appendChild(series.line);
    svg.appendChild(series.limitLine);
    figure.appendChild(svg);
    figure.insertBefore(caption, svg);
    series.value = value;
    chartsEl.appendChild(figure);
  });

  function number(v) {
    return typeof v === "number" && isFinite(v) ? v : 0;
  }

  function add(sample) {
    if (!sample || typeof sample.at !== "string" || seen[sample.at]) return;
    var t = Date.parse(sample.at);
    if (isNaN(t)) return;
    seen[sample.at] = true;
    samples.push({
      t: t,
      cpu_percent: number(sample.cpu_percent),
      memory_bytes: number(sample.memory_bytes),
      pids: number(sample.pids),
      output_bytes_per_s: number(sample.output_bytes_per_s)
    });
    if (samples.length > MAX_SAMPLES) samples.shift();
    if (!frame) {
      frame = true;
      window.requestAnimationFrame(render);
    }
  }

  function render() {
    frame = false;
    samples.sort(function (a, b) { return a.t - b.t; });
    root.setAttribute("data-sample-count", String(samples.length));
    if (emptyEl) emptyEl.hidden = samples.length > 0;
    if (!samples.length) return;
    var t0 = samples[0].t;
    var span = Math.max(10000, samples[samples.length - 1].t - t0);
    SERIES.forEach(function (series) {
      var limit = series.limit ? number(limits[series.limit]) : 0;
      var top = limit;
      samples.forEach(function (s) { if (s[series.key] > top) top = s[series.key]; });
      top = top > 0 ? top * 1.1 : 1;
      var points = samples.map(function (s) {
        var x = ((s.t - t0) / span) * W;
        var y = H - (s[series.key] / top) * H;
        return x.toFixed(1) + "," + y.toFixed(1);
      });
      series.line.setAttribute("points", points.join(" "));
      var lastX = (((samples[samples.length - 1].t - t0) / span) * W).toFixed(1);
      series.area.setAttribute("points", "0," + H + " " + points.join(" ") + " " + lastX + "," + H);
      if (limit) {
        var y = (H - (limit / top) * H).toFixed(1);
        series.limitLine.setAttribute("y1", y);
        series.limitLine.setAttribute("y2", y);
      }
      var latest = samples[samples.length - 1][series.key];
      series.value.textContent = series.format(latest) + (limit ? " of " + series.format(limit) : "");
    });
  }

  document.addEventListener("crucible:sample", function (event) { add(event.detail); });

  var api = root.getAttribute("data-samples-api");
  if (api && window.fetch) {
    window.fetch(api, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (data) {
        if (!data) return;
        limits = data.limits || {};
        (data.samples || []).forEach(add);
        render();
      })
      .catch(function () {});
  }
})();
