// Keys: the signed-in user's API keys (the admin: everyone's), each with its own limits;
// a new key's secret is shown once.

import { data, publicUrl } from "./api.js";
import { badge, busy, button, clear, confirmAction, copyText, errorBox, field, fmt, h, nextId, notify, options, showSecret, userLabel, when } from "./dom.js";

export const title = "Keys";

const LIMITS = [
  ["rpm", "Requests a minute", "Empty: no limit."],
  ["tpm", "Tokens a minute", "Prompt and completion tokens; empty: no limit."],
  ["max_concurrency", "Requests at once", "Empty: no limit."],
  ["monthly_token_budget", "Tokens a month", "Per calendar month (UTC); empty: no budget."],
];

function copyRow(label, value) {
  const input = h("input", { type: "text", readonly: true, value, spellcheck: "false" });
  const copy = button(
    "Copy",
    async () => {
      await copyText(input);
      notify(`${label} copied.`, "success");
    },
    { class: "secondary small", "aria-label": `Copy ${label}` },
  );
  return h("div", { class: "field" }, h("label", { for: (input.id = `copy-${label.replace(/\W+/g, "-")}`) }, label), h("div", { class: "secret-row" }, input, copy));
}

export async function render(root, ctx) {
  const list = h("div", { class: "cards" });
  const users = await ctx.users();
  const owners = new Map(users.map((user) => [user.user_id, user]));
  const base = publicUrl();

  async function reload() {
    const keys = await data("GET", "keys");
    clear(list);
    if (!keys.length) list.append(h("p", { class: "card muted" }, "No key yet."));
    for (const key of keys) list.append(keyCard(key, ctx, owners, reload));
  }

  const create = keyForm({ ctx, users, key: null, done: () => reload() });
  const createPanel = h(
    "section",
    { class: "card", id: "key-create", hidden: true, "aria-labelledby": "key-create-title" },
    h("h2", { id: "key-create-title", tabindex: "-1" }, "Create a key"),
    create.el,
  );
  create.onCancel = () => {
    createPanel.hidden = true;
    newButton.setAttribute("aria-expanded", "false");
    newButton.focus();
  };
  const newButton = button(
    "Create a key",
    () => {
      createPanel.hidden = false;
      newButton.setAttribute("aria-expanded", "true");
      create.reset();
      createPanel.querySelector("h2").focus();
    },
    { class: "primary", "aria-expanded": "false", "aria-controls": "key-create" },
  );

  await reload();
  root.append(
    h("p", { class: "lead" }, "Give each program its own key, with its own limits: a key can be switched off or deleted without touching the others."),
    h(
      "section",
      { class: "card", "aria-labelledby": "key-use-title" },
      h("h2", { id: "key-use-title" }, "Using a key"),
      copyRow("OpenAI base URL", `${base}/v1`),
      copyRow("Anthropic base URL", base),
      h("p", { class: "muted small" }, "Send the key as ", h("code", {}, "Authorization: Bearer sk-…"), " (or ", h("code", {}, "x-api-key"), ")."),
    ),
    h("div", { class: "toolbar" }, newButton),
    createPanel,
    list,
  );
}

function limitsText(key) {
  const parts = [];
  if (key.rpm) parts.push(`${fmt.int(key.rpm)} requests/min`);
  if (key.tpm) parts.push(`${fmt.int(key.tpm)} tokens/min`);
  if (key.max_concurrency) parts.push(`${fmt.int(key.max_concurrency)} at once`);
  if (key.monthly_token_budget) parts.push(`${fmt.compact(key.monthly_token_budget)} tokens/month`);
  return parts.length ? parts.join(" · ") : "no limits";
}

function keyCard(key, ctx, owners, reload) {
  const headingId = `key-${key.key_id}`;
  const card = h("article", { class: "card key", "aria-labelledby": headingId, dataset: { keyId: key.key_id } });
  const current = key.key_prefix === ctx.signedInPrefix;
  const on = key.status === 1;
  const expired = key.expires_at && new Date(key.expires_at).getTime() <= Date.now();
  const owner = owners.get(key.user_id);
  const editPanel = h("div", { hidden: true });

  const edit = button(
    "Edit",
    () => {
      const form = keyForm({ ctx, users: [], key, done: () => reload() });
      form.onCancel = () => {
        editPanel.hidden = true;
        edit.focus();
      };
      editPanel.replaceChildren(h("h3", {}, "Edit"), form.el);
      editPanel.hidden = false;
      form.focus();
    },
    { class: "secondary" },
  );
  const toggle = button(on ? "Revoke" : "Restore", async (event) => {
    if (on) {
      const sure = await confirmAction({
        title: `Revoke ${key.name}?`,
        message: current
          ? "This is the key you are signed in with: the console signs you out at once. Requests with it are refused until it is restored."
          : "Requests with this key are refused from now on, until it is restored.",
        confirm: "Revoke",
      });
      if (!sure) return;
    }
    await busy(event.currentTarget, () => data("PUT", `keys/${key.key_id}`, { body: { status: on ? 0 : 1 } }), {
      success: on ? `${key.name} is revoked.` : `${key.name} works again.`,
    });
    await reload();
  }, { class: "secondary" });
  const remove = button(
    "Delete",
    async (event) => {
      const sure = await confirmAction({
        title: `Delete ${key.name}?`,
        message: `${current ? "This is the key you are signed in with: the console signs you out. " : ""}The key stops working at once and cannot be restored. Its usage history is kept.`,
        confirm: "Delete the key",
      });
      if (!sure) return;
      await busy(event.currentTarget, () => data("DELETE", `keys/${key.key_id}`), { success: `${key.name} is deleted.` });
      await reload();
    },
    { class: "danger" },
  );

  card.append(
    h(
      "header",
      { class: "card-head" },
      h("div", {}, h("h2", { id: headingId }, key.name), h("p", { class: "muted" }, h("code", {}, `${key.key_prefix}…`))),
      h(
        "div",
        { class: "badges" },
        badge(on ? (expired ? "Expired" : "Active") : "Revoked", on && !expired ? "ok" : "bad"),
        key.is_primary ? badge("Primary") : null,
        key.limits_locked ? badge("Limits locked", "info") : null,
        current ? badge("This session", "info") : null,
      ),
    ),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Limits"),
      h("dd", {}, limitsText(key)),
      h("dt", {}, "Models"),
      h("dd", {}, key.allowed_models ? key.allowed_models.join(", ") : "all"),
      h("dt", {}, "Expires"),
      h("dd", {}, key.expires_at ? fmt.date(key.expires_at) : "never"),
      h("dt", {}, "Last used"),
      h("dd", {}, when(key.last_used_at)),
      h("dt", {}, "Created"),
      h("dd", {}, when(key.created_at)),
      ctx.isAdmin ? [h("dt", {}, "Owner"), h("dd", {}, owner ? userLabel(owner) : `user ${key.user_id}`)] : null,
    ),
    h("div", { class: "actions" }, edit, toggle, remove),
    editPanel,
  );
  return card;
}

function toLocalInput(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  const local = new Date(date.getTime() - date.getTimezoneOffset() * 60000);
  return local.toISOString().slice(0, 16);
}

/** The create form (key null) or the edit form of one key; an edit sends only what changed. */
function keyForm({ ctx, users, key, done }) {
  const creating = key === null;
  const name = h("input", { type: "text", maxlength: "200", required: true, autocomplete: "off" });
  const owner = h("select", { required: true });
  const limits = Object.fromEntries(LIMITS.map(([fieldName]) => [fieldName, h("input", { type: "number", min: "1", step: "1", inputmode: "numeric" })]));
  const models = h("textarea", { rows: "2", spellcheck: "false", placeholder: "gemini-3-flash, claude-*" });
  const expires = h("input", { type: "datetime-local" });
  const locked = h("input", { type: "checkbox" });
  const error = h("div", {});
  const submit = h("button", { type: "submit", class: "primary" }, creating ? "Create the key" : "Save");
  const cancel = button("Cancel", () => api.onCancel && api.onCancel(), { class: "secondary" });
  locked.id = nextId("locked");

  const form = h(
    "form",
    { class: "key-form", novalidate: true },
    field("Name", name, "What the key is for, e.g. \"laptop\" or \"CI\"."),
    creating && ctx.isAdmin ? field("Owner", owner) : null,
    h("div", { class: "grid" }, LIMITS.map(([fieldName, label, hint]) => field(label, limits[fieldName], hint))),
    field("Allowed models", models, "Empty: every model. Exact ids, or a prefix ending in *; separated by commas or new lines."),
    field("Expires", expires, "Local time; empty: never."),
    ctx.isAdmin ? h("div", { class: "check" }, locked, h("label", { for: locked.id }, "Lock the limits"), h("small", { class: "hint" }, "Its owner may then lower them, not raise or clear them.")) : null,
    error,
    h("div", { class: "actions" }, submit, cancel),
  );

  function values() {
    const out = { name: name.value.trim() };
    for (const [fieldName] of LIMITS) {
      const raw = limits[fieldName].value.trim();
      out[fieldName] = raw === "" ? null : Number(raw);
    }
    const list = models.value.split(/[\s,]+/).map((m) => m.trim()).filter(Boolean);
    out.allowed_models = list.length ? list : null;
    out.expires_at = expires.value ? new Date(expires.value).toISOString() : null;
    if (ctx.isAdmin) out.limits_locked = locked.checked ? 1 : 0;
    return out;
  }

  function same(a, b) {
    return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(error);
    const wanted = values();
    let body;
    if (creating) {
      body = Object.fromEntries(Object.entries(wanted).filter(([fieldName, value]) => value !== null && !(fieldName === "limits_locked" && value === 0)));
    } else {
      body = {};
      for (const [fieldName, value] of Object.entries(wanted)) {
        const before = fieldName === "expires_at" && key.expires_at ? new Date(key.expires_at).toISOString() : key[fieldName];
        if (fieldName === "expires_at" && toLocalInput(key.expires_at) === expires.value) continue;
        if (!same(before, value)) body[fieldName] = value;
      }
      if (!Object.keys(body).length) {
        error.append(h("p", { class: "note" }, "Nothing changed."));
        return;
      }
    }
    const query = creating && ctx.isAdmin ? { user_id: owner.value } : undefined;
    if (creating && ctx.isAdmin && !owner.value) {
      error.append(errorBox("Choose the user the key is for."));
      owner.focus();
      return;
    }
    submit.disabled = true;
    try {
      if (creating) {
        const created = await data("POST", "keys", { body, query });
        await showSecret({
          title: `Key "${created.name}" created`,
          message: "Copy the key now and store it somewhere safe: it is shown this once, never again.",
          secret: created.api_key,
        });
        if (api.onCancel) api.onCancel();
      } else {
        await data("PUT", `keys/${key.key_id}`, { body });
        notify(`${wanted.name || key.name} is saved.`, "success");
      }
      await done();
    } catch (failure) {
      error.append(errorBox(failure));
      const culprit = failure.param && (limits[failure.param] || { name, allowed_models: models, expires_at: expires }[failure.param]);
      if (culprit) culprit.focus();
    } finally {
      submit.disabled = false;
    }
  });

  const api = {
    el: form,
    onCancel: null,
    reset() {
      form.reset();
      clear(error);
      if (creating && ctx.isAdmin) {
        options(owner, [["", "Choose a user…"], ...users.map((user) => [user.user_id, userLabel(user)])]);
      }
    },
    focus() {
      name.focus();
    },
  };
  if (!creating) {
    name.value = key.name;
    for (const [fieldName] of LIMITS) limits[fieldName].value = key[fieldName] ?? "";
    models.value = (key.allowed_models || []).join(", ");
    expires.value = toLocalInput(key.expires_at);
    locked.checked = key.limits_locked === 1;
  }
  return api;
}
