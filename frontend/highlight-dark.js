/* Token colours for the dark colour scheme (the light one is CodeMirror's default style). */
import { HighlightStyle } from "@codemirror/language";
import { tags } from "@lezer/highlight";

export const oneDarkHighlightStyle = HighlightStyle.define(
  [
    { tag: tags.keyword, color: "#c678dd" },
    { tag: [tags.string, tags.special(tags.string)], color: "#98c379" },
    { tag: [tags.number, tags.bool, tags.null], color: "#d19a66" },
    { tag: tags.comment, color: "#7f848e", fontStyle: "italic" },
    { tag: [tags.function(tags.variableName), tags.definition(tags.variableName)], color: "#61afef" },
    { tag: [tags.className, tags.typeName], color: "#e5c07b" },
    { tag: tags.operator, color: "#56b6c2" },
  ],
  { themeType: "dark" },
);
