// Building the page from data: every value from the API becomes a text node, never markup, so
// nothing an API answer holds (a comment, a request id) can run as script in the console.

/**
 * An element: h("a", {href: "#/x", class: "link"}, "text", child, ...).
 * Attributes whose value is null, undefined or false are left out; true sets an empty one.
 * Attributes named on* take a function (an event listener), never a string.
 */
export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside `element` with `children`. */
export function replace(element, ...children) {
  element.replaceChildren();
  append(element, children);
}

/** A table with a caption, column headers and rows of cells (values or nodes). */
export function table(caption, headers, rows, attrs = {}) {
  return h(
    "table",
    attrs,
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, headers.map((name) => h("th", { scope: "col" }, name)))),
    h(
      "tbody",
      {},
      rows.map((cells) =>
        h("tr", {}, cells.map((cell, i) => (i === 0 ? h("th", { scope: "row" }, cell) : h("td", {}, cell)))),
      ),
    ),
  );
}

/** A labelled input: the label names it for screen readers and for tests alike. */
export function field(label, attrs) {
  const id = attrs.id ?? `f-${label.toLowerCase().replace(/[^a-z0-9]+/g, "-")}`;
  return h("p", { class: "field" }, h("label", { for: id }, label), h("input", { id, ...attrs }));
}

/** The API's error as the operator sees it: its code and its message. */
export function errorBox(error) {
  const code = error.code ?? "console_error";
  const status = error.status ? `HTTP ${error.status} ` : "";
  return h(
    "div",
    { class: "error", role: "alert", "data-error-code": code },
    h("strong", {}, status, h("code", {}, code)),
    error.message ? h("span", {}, ` ${error.message}`) : null,
  );
}

/** A definition list from [term, value] pairs. */
export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.flatMap(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "—")]),
  );
}
