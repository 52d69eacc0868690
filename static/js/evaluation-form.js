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

  var LANGUAGE_BY_SUFFIX = { py: "python", sh: "bash", bash: "bash" };

  /* "Load a file into the editor": its text replaces the code (the textarea, and the CodeMirror
   * editor when it is there, told by a crucible:replaced event); its suffix picks the language. */
  function setupFileInput(input) {
    var area = input.form && input.form.querySelector("textarea[data-code-editor]");
    var status = document.getElementById("code-file-status");
    var limit = parseInt(input.getAttribute("data-max-bytes"), 10) || 0;
    input.addEventListener("change", function () {
      var file = input.files && input.files[0];
      if (!file || !area) return;
      if (limit && file.size > limit) {
        status.textContent = file.name + " is larger than " + limit + " bytes, the most code may be; not loaded.";
        input.value = "";
        return;
      }
      file.text().then(function (text) {
        area.value = text;
        area.dispatchEvent(new CustomEvent("crucible:replaced"));
        var suffix = file.name.split(".").pop().toLowerCase();
        var select = input.form.querySelector("select[name=language]");
        var language = LANGUAGE_BY_SUFFIX[suffix];
        if (select && language && select.querySelector('option[value="' + language + '"]')) {
          select.value = language;
          select.dispatchEvent(new Event("change"));
        }
        status.textContent = "Loaded " + file.name + " (" + text.split("\n").length + " lines).";
      }, function () {
        status.textContent = "Could not read " + file.name + ".";
      });
    });
  }

  function init() {
    document.querySelectorAll("[data-code-editor]").forEach(setup);
    document.querySelectorAll("input[data-code-file]").forEach(setupFileInput);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
