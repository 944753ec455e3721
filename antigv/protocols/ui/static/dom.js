// Building the page without HTML strings: every value goes in as a text node or a
// property, never through innerHTML (the page's CSP refuses HTML sinks anyway: Trusted
// Types with no policy), so nothing the API returns can become markup.

const SVG_NS = "http://www.w3.org/2000/svg";
// Set as properties (they are state, not markup); everything else is an attribute.
const PROPERTIES = new Set(["value", "checked", "disabled", "hidden", "selected", "textContent", "indeterminate"]);
const REFUSED = new Set(["innerHTML", "outerHTML", "srcdoc", "style"]);

function apply(el, props) {
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (REFUSED.has(key) || (key.startsWith("on") && key !== "on")) {
      throw new Error(`dom: '${key}' is not set this way`);
    }
    if (key === "on") {
      for (const [event, handler] of Object.entries(value)) el.addEventListener(event, handler);
    } else if (key === "class") {
      el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (key === "href") {
      el.setAttribute("href", safeHref(value));
    } else if (PROPERTIES.has(key)) {
      el[key] = value;
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

/** Append children: strings and numbers as text, nodes as they are, arrays flattened. */
export function append(el, ...children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** An HTML element: h("p", {class: "note"}, "text", h("b", {}, value)). */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  apply(el, props);
  return append(el, children);
}

/** An SVG element, attributes only. */
export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  return append(el, children);
}

export function clear(el) {
  el.replaceChildren();
  return el;
}

/** A link may only lead to http(s) or stay in the page: never javascript: or data:. */
export function safeHref(value) {
  const text = String(value);
  if (text.startsWith("#")) return text;
  try {
    const url = new URL(text, document.baseURI);
    if (url.protocol === "https:" || url.protocol === "http:") return url.href;
  } catch {
    // falls through
  }
  return "#";
}

/** A link to another site, in a new tab, with no opener and no referrer. */
export function externalLink(href, text) {
  return h("a", { href, target: "_blank", rel: "noopener noreferrer" }, text);
}

let uid = 0;
export function nextId(prefix = "f") {
  uid += 1;
  return `${prefix}-${uid}`;
}

/** How a user is named in lists and pickers. */
export function userLabel(user) {
  return `${user.name || "user"} (user ${user.user_id})`;
}

/** A labelled form field: a label above an input (or select), an optional hint below. */
export function field(labelText, input, hint) {
  if (!input.id) input.id = nextId("field");
  const parts = [h("label", { for: input.id }, labelText), input];
  if (hint) {
    const hintId = nextId("hint");
    input.setAttribute("aria-describedby", hintId);
    parts.push(h("small", { id: hintId, class: "hint" }, hint));
  }
  return h("div", { class: "field" }, parts);
}

export function button(text, onClick, props = {}) {
  return h("button", { type: "button", ...props, on: { click: onClick, ...(props.on || {}) } }, text);
}

export function options(select, entries, selected) {
  clear(select);
  for (const [value, label] of entries) {
    append(select, h("option", { value: String(value), selected: String(value) === String(selected ?? "") }, label));
  }
  return select;
}

// --- formatting --------------------------------------------------------------------

const numbers = new Intl.NumberFormat();
const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export const fmt = {
  int: (n) => (n === null || n === undefined ? "—" : numbers.format(n)),
  compact: (n) => (n === null || n === undefined ? "—" : compact.format(n)),
  pct(fraction) {
    if (fraction === null || fraction === undefined) return "—";
    const pct = fraction * 100;
    return `${pct > 0 && pct < 10 ? pct.toFixed(1) : Math.round(pct)}%`;
  },
  date: (iso) => (iso ? dateTime.format(new Date(iso)) : "—"),
  relative(iso) {
    if (!iso) return "never";
    const seconds = (new Date(iso).getTime() - Date.now()) / 1000;
    const abs = Math.abs(seconds);
    if (abs < 45) return seconds < 0 ? "just now" : "in a moment";
    if (abs < 3600) return relative.format(Math.round(seconds / 60), "minute");
    if (abs < 86400) return relative.format(Math.round(seconds / 3600), "hour");
    return relative.format(Math.round(seconds / 86400), "day");
  },
  duration(ms) {
    const total = Math.max(0, Math.round(ms / 1000));
    const days = Math.floor(total / 86400);
    const hours = Math.floor((total % 86400) / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = total % 60;
    if (days) return `${days} d ${hours} h`;
    if (hours) return `${hours} h ${String(minutes).padStart(2, "0")} min`;
    return `${minutes}:${String(seconds).padStart(2, "0")}`;
  },
};

/** When something happened: relative text, the exact time on hover and for assistive tech. */
export function when(iso) {
  if (!iso) return h("span", { class: "muted" }, "never");
  return h("time", { datetime: iso, title: fmt.date(iso) }, fmt.relative(iso));
}

/** A countdown to ``iso``, kept current by tick(). */
export function countdown(iso, done = "now") {
  const el = h("span", { class: "countdown", dataset: { until: iso, done }, title: fmt.date(iso) });
  renderCountdown(el);
  return el;
}

function renderCountdown(el) {
  const left = new Date(el.dataset.until).getTime() - Date.now();
  el.textContent = left > 0 ? fmt.duration(left) : el.dataset.done;
}

/** Once a second: every countdown on the page. */
export function tick() {
  for (const el of document.querySelectorAll("[data-until]")) renderCountdown(el);
}

/** A quota as a meter and its percentage; low values show in the warning colour. */
export function quotaMeter(fraction, label) {
  const value = Math.max(0, Math.min(1, Number(fraction) || 0));
  return h(
    "span",
    { class: "quota" },
    h("meter", { min: "0", max: "1", low: "0.2", high: "0.5", optimum: "1", value: String(value), "aria-label": label }),
    h("span", { class: "quota-pct" }, fmt.pct(fraction)),
  );
}

export function badge(text, kind = "") {
  return h("span", { class: ["badge", kind && `badge-${kind}`] }, text);
}

// --- notices, dialogs ----------------------------------------------------------------

const MAX_NOTICES = 3;

/** A short notice at the corner; errors stay until closed, others go after a while. */
export function notify(message, kind = "info") {
  const region = document.getElementById("toasts");
  const close = () => toast.remove();
  const toast = h(
    "div",
    { class: ["toast", `toast-${kind}`], role: kind === "error" ? "alert" : "status" },
    h("span", {}, message),
    button("Dismiss", close, { class: "secondary small", "aria-label": "Dismiss this notice" }),
  );
  region.append(toast);
  // A few at a time: the oldest goes first.
  while (region.children.length > MAX_NOTICES) region.firstElementChild.remove();
  if (kind !== "error") setTimeout(close, 5000);
  return toast;
}

/** An inline error (role=alert) for a form or a panel. */
export function errorBox(error) {
  return h("p", { class: "error-text", role: "alert" }, error && error.message ? error.message : String(error));
}

function modal(dialog, focusEl) {
  const opener = document.activeElement;
  dialog.showModal();
  if (focusEl) focusEl.focus();
  return () => {
    dialog.close();
    if (opener && opener.isConnected && typeof opener.focus === "function") opener.focus();
  };
}

/** Ask before something that cannot be undone; resolves true when confirmed. */
export function confirmAction({ title, message, confirm = "Confirm", danger = true }) {
  const dialog = document.getElementById("confirm-dialog");
  const ok = document.getElementById("confirm-ok");
  const cancel = document.getElementById("confirm-cancel");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = message;
  ok.textContent = confirm;
  ok.className = danger ? "danger" : "";
  return new Promise((resolve) => {
    const close = modal(dialog, cancel);
    const finish = (answer) => {
      ok.removeEventListener("click", onOk);
      cancel.removeEventListener("click", onCancel);
      dialog.removeEventListener("cancel", onEscape);
      close();
      resolve(answer);
    };
    const onOk = () => finish(true);
    const onCancel = () => finish(false);
    const onEscape = (event) => {
      event.preventDefault();
      finish(false);
    };
    ok.addEventListener("click", onOk);
    cancel.addEventListener("click", onCancel);
    dialog.addEventListener("cancel", onEscape);
  });
}

/** Copy an input's value; true when it was copied. */
export async function copyText(input) {
  try {
    await navigator.clipboard.writeText(input.value);
    return true;
  } catch {
    // No clipboard API (a page not served over https or from localhost): the old way.
    input.select();
    return document.execCommand("copy");
  }
}

/** A secret shown this once, with a copy button; it is gone from the page once closed. */
export function showSecret({ title, message, secret }) {
  const dialog = document.getElementById("secret-dialog");
  const input = document.getElementById("secret-value");
  const copy = document.getElementById("secret-copy");
  const done = document.getElementById("secret-done");
  const status = document.getElementById("secret-copied");
  document.getElementById("secret-title").textContent = title;
  document.getElementById("secret-text").textContent = message;
  input.value = secret;
  status.textContent = "";
  return new Promise((resolve) => {
    const close = modal(dialog, copy);
    input.select();
    const onCopy = async () => {
      status.textContent = (await copyText(input)) ? "Copied to the clipboard." : "Select the key and copy it by hand.";
    };
    const finish = () => {
      copy.removeEventListener("click", onCopy);
      done.removeEventListener("click", finish);
      dialog.removeEventListener("cancel", onEscape);
      input.value = "";
      close();
      resolve();
    };
    const onEscape = (event) => {
      event.preventDefault();
      finish();
    };
    copy.addEventListener("click", onCopy);
    done.addEventListener("click", finish);
    dialog.addEventListener("cancel", onEscape);
  });
}

/** Run an action from a button: busy while it runs, its error shown as a notice. */
export async function busy(btn, action, { success } = {}) {
  if (btn) btn.disabled = true;
  try {
    const result = await action();
    if (success) notify(typeof success === "function" ? success(result) : success, "success");
    return result;
  } catch (error) {
    notify(error.message || String(error), "error");
    return undefined;
  } finally {
    if (btn && btn.isConnected) btn.disabled = false;
  }
}
