/* New evaluation form: a code editor textarea where Tab indents.
 *
 * Tab inserts four spaces (or indents the selected lines), Shift+Tab outdents. So that the
 * editor is not a keyboard trap, Esc releases it: the next Tab moves focus on as usual.
 * Ctrl+Enter (Cmd+Enter) submits the form.
 */
(function () {
  "use strict";

  var INDENT = "    ";

  function replace(area, start, end, text, selectStart, selectEnd) {
    area.focus();
    area.setSelectionRange(start, end);
    // execCommand keeps the browser's undo history; setRangeText is the fallback.
    var done = false;
    try {
      done = document.execCommand("insertText", false, text);
    } catch (e) {
      done = false;
    }
    if (!done) area.setRangeText(text, start, end, "end");
    if (selectStart !== undefined) area.setSelectionRange(selectStart, selectEnd);
  }

  function indentLines(area, outdent) {
    var value = area.value;
    var start = area.selectionStart;
    var end = area.selectionEnd;
    var lineStart = value.lastIndexOf("\n", start - 1) + 1;
    if (end > start && value.charAt(end - 1) === "\n") end--; // a selection ending at a line start
    var lines = value.slice(lineStart, end).split("\n");
    var changed = lines.map(function (line) {
      if (!outdent) return INDENT + line;
      var strip = 0;
      while (strip < INDENT.length && line.charAt(strip) === " ") strip++;
      if (strip === 0 && line.charAt(0) === "\t") strip = 1;
      return line.slice(strip);
    });
    var text = changed.join("\n");
    replace(area, lineStart, end, text, lineStart, lineStart + text.length);
  }

  function setup(area) {
    var released = false;
    area.addEventListener("keydown", function (event) {
      if (event.key === "Escape") {
        released = true;
        return;
      }
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (area.form.requestSubmit) area.form.requestSubmit();
        else area.form.submit();
        return;
      }
      if (event.key !== "Tab") {
        released = false;
        return;
      }
      if (released || event.altKey || event.ctrlKey || event.metaKey) return;
      event.preventDefault();
      var start = area.selectionStart;
      var end = area.selectionEnd;
      var multiline = area.value.slice(start, end).indexOf("\n") !== -1;
      if (event.shiftKey || multiline) indentLines(area, event.shiftKey);
      else replace(area, start, end, INDENT);
    });
    area.addEventListener("blur", function () {
      released = false;
    });
  }

  function init() {
    document.querySelectorAll("[data-code-editor]").forEach(setup);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
