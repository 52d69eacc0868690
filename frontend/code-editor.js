/* The new-evaluation form's code editor: CodeMirror 6 over the form's textarea.
 *
 * Bundled by esbuild into static/build/code-editor.js (scripts/setup.sh; the bundle is not committed).
 * The textarea stays the form field: every edit is copied into it, so the form posts as before, and
 * without this bundle (or JavaScript) the plain textarea is the editor. Strict CSP (no inline script or
 * style): the editor lives in a shadow root, where CodeMirror's styles are constructable style sheets
 * (adoptedStyleSheets) rather than a <style> element the policy would refuse; its look comes from the
 * page's CSS variables, which cross the shadow boundary.
 * Highlighting follows the language select (python, bash; anything else is plain text).
 */
import { EditorView, keymap, lineNumbers, highlightActiveLine, highlightActiveLineGutter, drawSelection } from "@codemirror/view";
import { EditorState, Compartment } from "@codemirror/state";
import { defaultKeymap, history, historyKeymap, indentWithTab } from "@codemirror/commands";
import { indentUnit, syntaxHighlighting, defaultHighlightStyle, bracketMatching, StreamLanguage } from "@codemirror/language";
import { python } from "@codemirror/lang-python";
import { shell } from "@codemirror/legacy-modes/mode/shell";
import { oneDarkHighlightStyle } from "./highlight-dark.js";

const LANGUAGES = {
  python: () => python(),
  bash: () => StreamLanguage.define(shell),
  sh: () => StreamLanguage.define(shell),
};

function languageFor(name) {
  const make = LANGUAGES[name];
  return make ? make() : [];
}

const look = EditorView.theme({
  "&": {
    border: "1px solid var(--input-border, #b9c0ca)", borderRadius: "6px", background: "var(--paper)",
    color: "var(--ink)", fontSize: "0.92rem", minHeight: "16rem", maxHeight: "70vh",
  },
  "&.cm-focused": { outline: "none", borderColor: "var(--accent)", boxShadow: "var(--focus)" },
  ".cm-scroller": { fontFamily: "var(--mono)", lineHeight: "1.45", minHeight: "16rem" },
  ".cm-gutters": { background: "var(--canvas)", color: "var(--muted)", borderRight: "1px solid var(--line)" },
  ".cm-activeLine, .cm-activeLineGutter": { background: "rgba(127, 140, 160, 0.12)" },
  ".cm-cursor": { borderLeftColor: "var(--ink)" },
});

function attach(area) {
  const form = area.form;
  const select = form ? form.querySelector("select[name=language]") : null;
  const language = new Compartment();
  const scheme = new Compartment();
  const dark = window.matchMedia ? window.matchMedia("(prefers-color-scheme: dark)") : null;
  const schemeTheme = () => EditorView.theme({}, { dark: Boolean(dark && dark.matches) });
  const submit = () => {
    if (!form) return false;
    if (form.requestSubmit) form.requestSubmit();
    else form.submit();
    return true;
  };
  const host = document.createElement("div");
  host.className = "code-editor-host";
  host.attachShadow({ mode: "open" });
  area.insertAdjacentElement("afterend", host);
  const view = new EditorView({
    root: host.shadowRoot,
    state: EditorState.create({
      doc: area.value,
      extensions: [
        lineNumbers(),
        highlightActiveLineGutter(),
        highlightActiveLine(),
        drawSelection(),
        history(),
        bracketMatching(),
        indentUnit.of("    "),
        EditorState.tabSize.of(4),
        look,
        syntaxHighlighting(defaultHighlightStyle, { fallback: true }),
        syntaxHighlighting(oneDarkHighlightStyle),
        language.of(languageFor(select ? select.value : "python")),
        scheme.of(schemeTheme()),
        keymap.of([{ key: "Mod-Enter", run: submit }, indentWithTab, ...defaultKeymap, ...historyKeymap]),
        EditorView.updateListener.of((update) => {
          if (update.docChanged) area.value = update.state.doc.toString();
        }),
        EditorView.contentAttributes.of({
          "aria-label": "Code",
          "aria-describedby": area.getAttribute("aria-describedby") || "",
          spellcheck: "false",
          autocapitalize: "off",
        }),
      ],
    }),
  });
  view.dom.classList.add("cm-crucible");
  host.shadowRoot.appendChild(view.dom);
  area.hidden = true;
  area.setAttribute("data-code-editor-attached", "");
  if (dark && dark.addEventListener) {
    dark.addEventListener("change", () => view.dispatch({ effects: scheme.reconfigure(schemeTheme()) }));
  }
  if (select) {
    select.addEventListener("change", () => {
      view.dispatch({ effects: language.reconfigure(languageFor(select.value)) });
    });
  }
  // Something else (the file upload, an example) replaced the textarea's text: show it.
  area.addEventListener("crucible:replaced", () => {
    view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: area.value } });
  });
  const label = area.id ? document.querySelector(`label[for="${area.id}"]`) : null;
  if (label) label.addEventListener("click", () => view.focus());
  window.crucibleCodeEditor = view; // for tests and the curious
}

function init() {
  document.querySelectorAll("textarea[data-code-editor]").forEach(attach);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
