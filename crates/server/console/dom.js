// Building the page from data: every piece of data becomes text (textContent), never markup.

/** An element with attributes (strings; `class` included) and children (nodes or text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** The element of an id. */
export const $ = (id) => document.getElementById(id);

/** Shows or hides an element with a text in it (hidden when the text is empty). */
export function note(node, text) {
  node.textContent = text || "";
  node.hidden = !text;
}

/** Bytes, readable. */
export function bytes(n) {
  if (n === undefined || n === null) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A duration in ms, readable. */
export function age(ms) {
  if (ms < 0) ms = 0;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** A time of day, for logs. */
export const clock = (date = new Date()) => date.toLocaleTimeString([], { hour12: false });

/** Waits. */
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
