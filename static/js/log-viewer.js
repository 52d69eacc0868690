/* The log viewer of the evaluation detail page: a small terminal for hostile output.
 *
 * Sandbox output never reaches the page as HTML: it is cut into text nodes inside spans whose
 * classes come from a fixed list (ANSI SGR colours and attributes); 256-colour and true-colour
 * codes become CSSOM colours built from the parsed integers. Every other escape sequence (cursor
 * movement, OSC titles and links, charset switches) and control character is dropped.
 *
 * Terminal behaviour: "\r" moves back to the start of the line, so the next text overwrites it
 * (a progress bar ends as its last state; "\r\n" is a plain newline); "\b" steps back one
 * character; "ESC[K" clears to the end of the line. Each stream keeps its own escape state.
 *
 * Lines: each one is a block element with a number (a permalink, #L120), an optional timestamp
 * (of the chunk that started it) and its text. Lines are grouped in blocks of BLOCK_LINES with
 * `content-visibility: auto`, so the browser lays out only the blocks near the screen: 100 000
 * lines stay smooth. Beyond MAX_LINES the oldest blocks leave the page (the full log stays
 * downloadable). `::group::NAME` … `::endgroup::` lines fold into a section named NAME.
 *
 * API (window.CrucibleLogViewer.create(pre, options)): write(stream, text, ts) adds output;
 * flush() brings the open line and everything derived (search, #L target) up to date, once per
 * frame. options.onJump() is called when the viewer scrolls to a line itself (stop following).
 */
(function () {
  "use strict";

  var BLOCK_LINES = 200;
  var MAX_LINES = 150000;
  var MAX_MATCHES = 10000;
  var MAX_PARTIAL_ESCAPE = 256;
  var SPECIAL = /[\x00-\x1f\x7f\x9b]/g;
  var CSI_BODY = /^[0-?]*[ -\/]*[@-~]/;
  var TARGET = /^#L([0-9]{1,9})$/;

  // --- SGR ------------------------------------------------------------------------------

  function plainStyle() {
    return { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false, inverse: false, strike: false };
  }

  function copyStyle(style) {
    var copy = {};
    for (var key in style) copy[key] = style[key];
    return copy;
  }

  function clampByte(value) {
    var n = parseInt(value, 10);
    return isNaN(n) ? 0 : Math.max(0, Math.min(255, n));
  }

  // 16-255 of the xterm palette as rgb() (0-15 are classes, themable in CSS).
  function xterm256(n) {
    if (n < 16) return n;
    if (n >= 232) {
      var grey = 8 + (n - 232) * 10;
      return "rgb(" + grey + "," + grey + "," + grey + ")";
    }
    n -= 16;
    var steps = [0, 95, 135, 175, 215, 255];
    return "rgb(" + steps[Math.floor(n / 36)] + "," + steps[Math.floor(n / 6) % 6] + "," + steps[n % 6] + ")";
  }

  // Reads an extended colour (38/48 ;5;n or ;2;r;g;b) at params[i]; returns [colour, next index].
  function extendedColour(params, i) {
    if (params[i + 1] === "5" && params.length > i + 2) return [xterm256(clampByte(params[i + 2])), i + 3];
    if (params[i + 1] === "2" && params.length > i + 4) {
      return ["rgb(" + clampByte(params[i + 2]) + "," + clampByte(params[i + 3]) + "," + clampByte(params[i + 4]) + ")", i + 5];
    }
    return [null, params.length];
  }

  function applySgr(style, paramText) {
    var params = paramText === "" ? ["0"] : paramText.split(/[;:]/);
    var i = 0;
    while (i < params.length) {
      var code = params[i] === "" ? 0 : parseInt(params[i], 10);
      var next = i + 1;
      if (code === 0) style = plainStyle();
      else if (code === 1) style.bold = true;
      else if (code === 2) style.dim = true;
      else if (code === 3) style.italic = true;
      else if (code === 4) style.underline = true;
      else if (code === 7) style.inverse = true;
      else if (code === 9) style.strike = true;
      else if (code === 22) { style.bold = false; style.dim = false; }
      else if (code === 23) style.italic = false;
      else if (code === 24) style.underline = false;
      else if (code === 27) style.inverse = false;
      else if (code === 29) style.strike = false;
      else if (code >= 30 && code <= 37) style.fg = code - 30;
      else if (code >= 90 && code <= 97) style.fg = code - 90 + 8;
      else if (code === 39) style.fg = null;
      else if (code >= 40 && code <= 47) style.bg = code - 40;
      else if (code >= 100 && code <= 107) style.bg = code - 100 + 8;
      else if (code === 49) style.bg = null;
      else if (code === 38 || code === 48) {
        var found = extendedColour(params, i);
        if (code === 38) style.fg = found[0]; else style.bg = found[0];
        next = found[1];
      }
      i = next;
    }
    return style;
  }

  // The class list of a style and the CSSOM colours it needs (only for 256/true colours).
  function styleKey(style) {
    var classes = [];
    if (typeof style.fg === "number") classes.push("ansi-fg-" + style.fg);
    if (typeof style.bg === "number") classes.push("ansi-bg-" + style.bg);
    if (style.bold) classes.push("ansi-bold");
    if (style.dim) classes.push("ansi-dim");
    if (style.italic) classes.push("ansi-italic");
    if (style.underline) classes.push("ansi-underline");
    if (style.inverse) classes.push("ansi-inverse");
    if (style.strike) classes.push("ansi-strike");
    return {
      classes: classes.join(" "),
      fg: typeof style.fg === "string" ? style.fg : "",
      bg: typeof style.bg === "string" ? style.bg : ""
    };
  }

  function sameLook(a, b) {
    return a.classes === b.classes && a.fg === b.fg && a.bg === b.bg;
  }

  // --- timestamps -----------------------------------------------------------------------

  function two(n) { return n < 10 ? "0" + n : String(n); }

  function formatTs(iso) {
    if (!iso) return "";
    var date = new Date(iso);
    if (isNaN(date.getTime())) return "";
    var ms = String(date.getMilliseconds());
    while (ms.length < 3) ms = "0" + ms;
    return two(date.getHours()) + ":" + two(date.getMinutes()) + ":" + two(date.getSeconds()) + "." + ms;
  }

  // --- the viewer -----------------------------------------------------------------------

  function create(root, options) {
    options = options || {};
    var lines = [];        // every line ever started: {n, segs, len, text, ts, el, group, kind}
    var firstLine = 0;     // lines before this one were trimmed from the page
    var open = null;       // the line text is being written to (no newline yet)
    var cursor = 0;        // the column the next text goes to, in the open line
    var dirty = [];        // lines to (re-)render at the next flush
    var placing = [];      // new lines and fold bodies to put on the page at the next flush, in order
    var streams = {};      // per stream: {style, look, partial}
    var parent = root;     // where new blocks go: the root, or the body of the open group
    var block = null;
    var blockLines = 0;
    var group = null;      // the open ::group:: {header, body, line}
    var tsCache = { iso: null, text: "" };
    var chunkTs = "";
    var onScreenLines = 0;
    var search = { query: "", matches: [], index: -1, stale: false, timer: 0, marked: null };
    var target = { n: 0, shown: false };

    function stateOf(stream) {
      if (!streams[stream]) streams[stream] = { style: plainStyle(), look: styleKey(plainStyle()), partial: "" };
      return streams[stream];
    }

    // -- the model --

    function startLine() {
      var line = { n: lines.length + 1, segs: [], len: 0, text: null, ts: chunkTs, el: null, group: group, kind: "" };
      lines.push(line);
      // Placed on the page at the next flush, in the container of now (a fold a later line opens or
      // closes must not move it).
      line.container = parent;
      placing.push(line);
      open = line;
      cursor = 0;
      return line;
    }

    function markDirty(line) {
      if (!line.dirty) {
        line.dirty = true;
        dirty.push(line);
      }
    }

    // Appends or overwrites ``text`` at the cursor of the open line.
    function put(stream, look, text) {
      var line = open || startLine();
      if (cursor >= line.len) {
        var last = line.segs[line.segs.length - 1];
        if (last && last.stream === stream && sameLook(last.look, look)) last.text += text;
        else line.segs.push({ stream: stream, look: look, text: text });
      } else {
        overwrite(line, stream, look, text);
      }
      line.len = Math.max(line.len, cursor + text.length);
      cursor += text.length;
      markDirty(line);
    }

    // Terminal overwrite: the characters from the cursor on are replaced by ``text``.
    function overwrite(line, stream, look, text) {
      var before = cut(line.segs, 0, cursor);
      var after = cut(line.segs, cursor + text.length, line.len);
      line.segs = before.concat([{ stream: stream, look: look, text: text }], after);
    }

    // The segments covering columns [from, to) of ``segs``.
    function cut(segs, from, to) {
      var out = [];
      var at = 0;
      for (var i = 0; i < segs.length && at < to; i++) {
        var seg = segs[i];
        var end = at + seg.text.length;
        if (end > from) {
          var text = seg.text.slice(Math.max(0, from - at), Math.min(seg.text.length, to - at));
          if (text) out.push({ stream: seg.stream, look: seg.look, text: text });
        }
        at = end;
      }
      return out;
    }

    function clearToEnd(whole) {
      if (!open) return;
      open.segs = whole ? [] : cut(open.segs, 0, cursor);
      open.len = whole ? 0 : Math.min(open.len, cursor);
      if (whole) cursor = 0;
      markDirty(open);
    }

    function newline(stream, look) {
      var line = open || startLine();
      var last = line.segs[line.segs.length - 1];
      // The newline belongs to the text before it (so each stream's spans hold its whole text).
      if (last && last.stream === stream) last.text += "\n";
      else line.segs.push({ stream: stream, look: look, text: "\n" });
      line.text = plainText(line);
      commandOf(line);
      markDirty(line);
      open = null;
      cursor = 0;
    }

    function plainText(line) {
      var text = "";
      for (var i = 0; i < line.segs.length; i++) text += line.segs[i].text;
      return text;
    }

    // ``::group::NAME`` opens a fold, ``::endgroup::`` closes it (as GitHub Actions does).
    function commandOf(line) {
      var text = line.text.replace(/\n$/, "");
      if (text.indexOf("::group::") === 0) {
        closeGroup();
        line.kind = "group";
        line.title = text.slice(9) || "Group";
        line.group = null;
        openGroup(line);
      } else if (text === "::endgroup::") {
        line.kind = "endgroup";
        closeGroup();
      }
    }

    // An ended group folds (as GitHub Actions shows them); its header stays to unfold it.
    function closeGroup() {
      if (group && options.collapseEnded !== false) setCollapsed(group, true);
      group = null;
      parent = root;
      block = null;
    }

    function openGroup(line) {
      var body = document.createElement("span");
      body.className = "log-group";
      body.id = "log-group-" + line.n;
      placing.push({ body: body });
      group = { line: line, body: body, collapsed: false };
      line.fold = group;
      parent = body;
      block = null;
    }

    // Escape sequences and control characters of one chunk of one stream.
    function write(stream, data, ts) {
      if (ts) {
        if (tsCache.iso !== ts) tsCache = { iso: ts, text: formatTs(ts) };
        chunkTs = tsCache.text;
      }
      var state = stateOf(stream);
      var text = state.partial + data;
      state.partial = "";
      var at = 0;
      SPECIAL.lastIndex = 0;
      var match;
      while ((match = SPECIAL.exec(text)) !== null) {
        var i = match.index;
        if (i > at) put(stream, state.look, text.slice(at, i));
        var c = text.charCodeAt(i);
        var next = i + 1;
        if (c === 10) newline(stream, state.look);
        else if (c === 13) cursor = 0;
        else if (c === 8) cursor = Math.max(0, cursor - 1);
        else if (c === 9) put(stream, state.look, "\t");
        else if (c === 27 || c === 0x9b) {
          next = escape(state, text, i, c === 0x9b);
          if (next < 0) {
            if (text.length - i <= MAX_PARTIAL_ESCAPE) state.partial = text.slice(i);
            return;
          }
        }
        at = next;
        SPECIAL.lastIndex = next;
      }
      if (at < text.length) put(stream, state.look, text.slice(at));
    }

    // Consumes the escape sequence at ``i``; returns the index after it, or -1 if the text ends first.
    function escape(state, text, i, eightBit) {
      var start = eightBit ? i + 1 : i + 2;
      if (!eightBit && i + 1 >= text.length) return -1;
      var kind = eightBit ? "[" : text.charAt(i + 1);
      if (kind === "[") {
        var body = CSI_BODY.exec(text.slice(start, start + MAX_PARTIAL_ESCAPE));
        if (!body) return text.length - start < MAX_PARTIAL_ESCAPE && /^[0-?]*[ -\/]*$/.test(text.slice(start)) ? -1 : start;
        var seq = body[0];
        var final = seq.charAt(seq.length - 1);
        var params = seq.slice(0, -1);
        if (final === "m" && /^[0-9;:]*$/.test(params)) {
          state.style = applySgr(copyStyle(state.style), params);
          state.look = styleKey(state.style);
        } else if (final === "K") {
          clearToEnd(params === "2");
        }
        return start + seq.length;
      }
      if (kind === "]" || kind === "P" || kind === "X" || kind === "^" || kind === "_") {
        // A string up to BEL or ST (ESC \): titles, hyperlinks, … all dropped.
        for (var j = start; j < text.length; j++) {
          var c = text.charCodeAt(j);
          if (c === 7) return j + 1;
          if (c === 27 && text.charAt(j + 1) === "\\") return j + 2;
          if (c === 27 && j + 1 >= text.length) return -1;
        }
        return -1;
      }
      if ("()*+".indexOf(kind) !== -1) return i + 3 <= text.length ? i + 3 : -1;
      return i + 2;
    }

    // -- the page --

    var blockParent = null;
    // Appends the element of ``line`` to the last block of its container (a new block when full).
    function placeLine(line) {
      if (line.el) return;
      if (!block || blockParent !== line.container || blockLines >= BLOCK_LINES) {
        block = document.createElement("span");
        block.className = "log-block";
        line.container.appendChild(block);
        blockParent = line.container;
        blockLines = 0;
      }
      line.el = document.createElement("span");
      line.el.id = "L" + line.n;
      line.el.setAttribute("data-n", line.n);
      if (line.ts) line.el.setAttribute("data-ts", line.ts);
      block.appendChild(line.el);
      blockLines++;
      onScreenLines++;
    }

    function placeAll() {
      var batch = placing;
      placing = [];
      for (var i = 0; i < batch.length; i++) {
        if (batch[i].body) {
          root.appendChild(batch[i].body);
          block = null;
        } else {
          placeLine(batch[i]);
        }
      }
    }

    // The segments of a line as spans: each with its colours, and its stream unless the line has one.
    function renderSegs(el, segs, mark, withStream) {
      var at = 0;
      for (var i = 0; i < segs.length; i++) {
        var seg = segs[i];
        var span = document.createElement("span");
        span.className = (withStream ? "log__chunk log__chunk--" + (seg.stream === "stderr" ? "stderr " : "stdout ") : "") +
          seg.look.classes;
        if (seg.look.fg) span.style.color = seg.look.fg;
        if (seg.look.bg) span.style.backgroundColor = seg.look.bg;
        var end = at + seg.text.length;
        if (mark && mark.start < end && mark.end > at) {
          var from = Math.max(0, mark.start - at);
          var to = Math.min(seg.text.length, mark.end - at);
          if (from) span.appendChild(document.createTextNode(seg.text.slice(0, from)));
          var hit = document.createElement("mark");
          hit.className = "log-match";
          hit.textContent = seg.text.slice(from, to);
          span.appendChild(hit);
          if (to < seg.text.length) span.appendChild(document.createTextNode(seg.text.slice(to)));
        } else {
          span.textContent = seg.text;
        }
        el.appendChild(span);
        at = end;
      }
    }

    function plainLook(seg) {
      return !seg.look.classes && !seg.look.fg && !seg.look.bg;
    }

    // The line's element: one stream's line carries the stream's class itself, and its text as one
    // text node when it has no colours (most lines: one element per line).
    function renderLine(line, mark) {
      line.dirty = false;
      if (line.n <= firstLine || !line.el) return;
      var el = line.el;
      var segs = line.segs;
      var stream = segs.length ? segs[0].stream : "stdout";
      var single = true;
      for (var i = 1; i < segs.length; i++) if (segs[i].stream !== stream) single = false;
      var stderr = !single || stream === "stderr";
      el.className = "log-line" + (single ? " log__chunk log__chunk--" + (stream === "stderr" ? "stderr" : "stdout") : "") +
        (stderr ? " log-line--stderr" : "") + (line.kind ? " log-line--" + line.kind : "") +
        (target.n === line.n ? " log-line--target" : "");
      if (line.kind === "group") {
        el.textContent = "";
        var toggle = document.createElement("button");
        toggle.type = "button";
        toggle.className = "log-fold";
        toggle.setAttribute("aria-controls", "log-group-" + line.n);
        toggle.setAttribute("aria-expanded", line.fold && line.fold.collapsed ? "false" : "true");
        toggle.setAttribute("data-line", line.n);
        toggle.textContent = line.title;
        el.appendChild(toggle);
        el.appendChild(document.createTextNode("\n"));
      } else if (!mark && segs.length === 1 && plainLook(segs[0])) {
        el.textContent = segs[0].text;
      } else {
        el.textContent = "";
        renderSegs(el, segs, mark, !single);
      }
    }

    function trim() {
      while (onScreenLines > MAX_LINES && root.firstChild) {
        var first = root.firstChild;
        var count = first.getElementsByClassName("log-line").length;
        root.removeChild(first);
        onScreenLines -= count;
        if (first === block || first === parent || first.contains(block)) { block = null; }
        if (first === parent) { parent = root; group = null; }
      }
      while (firstLine < lines.length && lines[firstLine].el && !root.contains(lines[firstLine].el)) {
        lines[firstLine].el = null;
        lines[firstLine].segs = [];
        firstLine++;
      }
      if (options.onTrim && firstLine) options.onTrim(firstLine);
    }

    function flush() {
      placeAll();
      var batch = dirty;
      dirty = [];
      for (var i = 0; i < batch.length; i++) {
        var line = batch[i];
        renderLine(line, search.marked && search.marked.n === line.n ? search.marked : null);
      }
      if (onScreenLines > MAX_LINES) trim();
      if (search.query && batch.length) staleSearch();
      if (target.n && !target.shown) showTarget();
    }

    // -- folding --

    function setCollapsed(fold, collapsed) {
      fold.collapsed = collapsed;
      fold.body.classList.toggle("log-group--collapsed", collapsed);
      var el = fold.line.el;
      var toggle = el && el.querySelector(".log-fold");
      if (toggle) toggle.setAttribute("aria-expanded", collapsed ? "false" : "true");
    }

    function reveal(line) {
      if (line.group && line.group.collapsed) setCollapsed(line.group, false);
    }

    root.addEventListener("click", function (event) {
      var toggle = event.target.closest ? event.target.closest(".log-fold") : null;
      if (toggle) {
        var line = lines[parseInt(toggle.getAttribute("data-line"), 10) - 1];
        if (line && line.fold) setCollapsed(line.fold, !line.fold.collapsed);
        return;
      }
      // The number is the line's ::before, in its left padding: a click there links to the line.
      var el = event.target.closest ? event.target.closest(".log-line") : null;
      if (el && event.target === el && event.offsetX < parseFloat(window.getComputedStyle(el).paddingLeft)) {
        var n = parseInt(el.getAttribute("data-n"), 10);
        if (window.history && window.history.replaceState) window.history.replaceState(null, "", "#L" + n);
        setTarget(n, false);
      }
    });

    // -- #L120 --

    function setTarget(n, scroll) {
      var previous = target.n && lines[target.n - 1];
      target = { n: n, shown: !scroll };
      if (previous && previous.el) previous.el.classList.remove("log-line--target");
      var line = lines[n - 1];
      if (line && line.el) line.el.classList.add("log-line--target");
      if (scroll) showTarget();
    }

    function showTarget() {
      var line = lines[target.n - 1];
      if (!line || !line.el) return;
      target.shown = true;
      line.el.classList.add("log-line--target");
      scrollToLine(line);
    }

    function scrollToLine(line) {
      reveal(line);
      if (options.onJump) options.onJump();
      line.el.scrollIntoView({ block: "center" });
      // Blocks above may have been laid out at their estimated height: correct once they are drawn.
      window.requestAnimationFrame(function () { if (line.el) line.el.scrollIntoView({ block: "center" }); });
    }

    function fromHash() {
      var found = TARGET.exec(window.location.hash);
      if (found) setTarget(parseInt(found[1], 10), true);
    }
    window.addEventListener("hashchange", fromHash);
    fromHash();

    // -- search --

    var searchBox = document.getElementById("log-search");
    var countEl = document.getElementById("log-search-count");

    function runSearch() {
      search.stale = false;
      var query = search.query.toLowerCase();
      var matches = [];
      if (query) {
        for (var i = firstLine; i < lines.length && matches.length < MAX_MATCHES; i++) {
          var line = lines[i];
          var text = (line.text !== null ? line.text : plainText(line)).toLowerCase();
          var from = text.indexOf(query);
          while (from !== -1 && matches.length < MAX_MATCHES) {
            matches.push({ n: line.n, start: from, end: from + query.length });
            from = text.indexOf(query, from + query.length);
          }
        }
      }
      search.matches = matches;
      if (search.index >= matches.length) search.index = matches.length - 1;
      showCount();
    }

    function staleSearch() {
      if (search.stale) return;
      search.stale = true;
      window.setTimeout(runSearch, 500);
    }

    function showCount() {
      if (!countEl) return;
      var total = search.matches.length;
      var more = total >= MAX_MATCHES ? "+" : "";
      if (!search.query) countEl.textContent = "";
      else if (!total) countEl.textContent = "No matches";
      else if (search.index < 0) countEl.textContent = total.toLocaleString() + more + " matches";
      else countEl.textContent = (search.index + 1).toLocaleString() + " of " + total.toLocaleString() + more;
    }

    function go(step) {
      if (search.stale) runSearch();
      var total = search.matches.length;
      if (!total) return;
      search.index = search.index < 0 ? (step > 0 ? 0 : total - 1) : (search.index + step + total) % total;
      var match = search.matches[search.index];
      var previous = search.marked && lines[search.marked.n - 1];
      search.marked = match;
      if (previous && previous.n !== match.n) renderLine(previous, null);
      var line = lines[match.n - 1];
      renderLine(line, match);
      scrollToLine(line);
      showCount();
    }

    function setQuery(query) {
      window.clearTimeout(search.timer);
      search.query = query;
      search.index = -1;
      var previous = search.marked && lines[search.marked.n - 1];
      search.marked = null;
      if (previous) renderLine(previous, null);
      runSearch();
    }

    if (searchBox) {
      searchBox.addEventListener("input", function () {
        window.clearTimeout(search.timer);
        search.timer = window.setTimeout(function () { setQuery(searchBox.value); }, 150);
      });
      searchBox.addEventListener("keydown", function (event) {
        if (event.key === "Enter") {
          event.preventDefault();
          if (search.query !== searchBox.value) setQuery(searchBox.value);
          go(event.shiftKey ? -1 : 1);
        } else if (event.key === "Escape") {
          searchBox.value = "";
          setQuery("");
        }
      });
    }
    var nextButton = document.getElementById("log-search-next");
    var prevButton = document.getElementById("log-search-prev");
    function syncQuery() { if (searchBox && search.query !== searchBox.value) setQuery(searchBox.value); }
    if (nextButton) nextButton.addEventListener("click", function () { syncQuery(); go(1); });
    if (prevButton) prevButton.addEventListener("click", function () { syncQuery(); go(-1); });

    // -- timestamps --

    var tsBox = document.getElementById("log-timestamps");
    if (tsBox) {
      var applyTs = function () { root.classList.toggle("log--timestamps", tsBox.checked); };
      tsBox.addEventListener("change", applyTs);
      applyTs();
    }

    return {
      write: write,
      flush: flush,
      lineCount: function () { return lines.length; },
      firstShownLine: function () { return firstLine + 1; }
    };
  }

  window.CrucibleLogViewer = { create: create };
})();
