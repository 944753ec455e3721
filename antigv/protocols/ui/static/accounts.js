// Accounts: the accounts of the signed-in user (the admin: everyone's), Google accounts
// and Gemini API keys, what state each is in, what it may still serve, and the flows that
// add one.

import { api, data } from "./api.js";
import {
  append,
  badge,
  busy,
  button,
  clear,
  confirmAction,
  countdown,
  errorBox,
  externalLink,
  field,
  fmt,
  h,
  notify,
  options,
  quotaMeter,
  userLabel,
  when,
} from "./dom.js";

export const title = "Accounts";

const GROUP_NAMES = { gemini: "Gemini", claude_gpt: "Claude and GPT", "3p": "Claude and GPT" };
const WINDOW_NAMES = { "5h": "5-hour window", weekly: "Weekly window" };
const GEMINI_KEY = "gemini_api";

function isKey(account) {
  return account.kind === GEMINI_KEY;
}

function reasonText(reason) {
  return String(reason || "").toLowerCase().replaceAll("_", " ");
}

function groupName(name) {
  return GROUP_NAMES[name] || name;
}

export async function render(root, ctx) {
  const list = h("div", { class: "cards single" });
  const owners = new Map((await ctx.users()).map((user) => [user.user_id, user]));
  const add = addAccountFlow(ctx, () => reload());
  // The admin holds no accounts of its own, and a key is added for its caller only.
  const addKey = ctx.isAdmin ? null : addKeyFlow(() => reload());

  async function reload() {
    const accounts = await data("GET", "accounts");
    clear(list);
    if (!accounts.length) {
      list.append(
        h(
          "div",
          { class: "card empty" },
          h("p", {}, "No Google account yet."),
          h(
            "p",
            { class: "muted" },
            ctx.isAdmin
              ? "Add one with the button above: requests are served through the users' accounts (and the shared pool)."
              : "Add a Google account or a Gemini API key with the buttons above: requests are served through your accounts (and the shared pool).",
          ),
        ),
      );
      return;
    }
    for (const account of accounts) list.append(accountCard(account, ctx, owners, reload));
  }

  const open = button("Add a Google account", () => add.open(open), { class: "primary", "aria-expanded": "false", "aria-controls": add.el.id });
  const openKey = addKey
    ? button("Add a Gemini API key", () => addKey.open(openKey), { class: "primary", "aria-expanded": "false", "aria-controls": addKey.el.id })
    : null;
  const refresh = button("Refresh", (event) => busy(event.currentTarget, reload), { class: "secondary" });
  await reload();
  root.append(
    h(
      "p",
      { class: "lead" },
      ctx.isAdmin
        ? "Every user's accounts: Google accounts and Gemini API keys. Dedicated accounts serve their owner only; shared accounts join the pool."
        : "Your accounts: Google accounts and Gemini API keys. Dedicated accounts serve only you; shared accounts join the pool every contributing user draws on.",
    ),
    h("div", { class: "toolbar" }, open, openKey, refresh),
    add.el,
    addKey ? addKey.el : null,
    list,
  );
}

// --- one account -------------------------------------------------------------------

function accountCard(account, ctx, owners, reload) {
  const headingId = `account-${account.account_id}`;
  const card = h("article", { class: "card account", "aria-labelledby": headingId, dataset: { accountId: account.account_id } });

  function draw(current) {
    account = current;
    const enabled = account.status === 1;
    const shared = account.is_shared === 1;
    const key = isKey(account);
    const label = account.name || account.email;
    const owner = owners.get(account.user_id);
    const quotas = quotasPanel(account);
    const rename = renameForm(account, (updated) => draw(updated));

    const facts = h(
      "dl",
      { class: "facts" },
      h("dt", {}, "Last used"),
      h("dd", {}, when(account.last_used_at)),
      // A key has no Google project or tier of its own here (OAuth only); its e-mail column
      // holds a fingerprint that names it without the secret.
      key ? [h("dt", {}, "Fingerprint"), h("dd", {}, h("code", {}, account.email))] : [h("dt", {}, "Project"), h("dd", {}, account.project_id || "—")],
      !key && account.tier ? [h("dt", {}, "Tier"), h("dd", {}, account.tier)] : null,
      h("dt", {}, "Added"),
      h("dd", {}, when(account.created_at)),
      ctx.isAdmin ? [h("dt", {}, "Owner"), h("dd", {}, owner ? userLabel(owner) : `user ${account.user_id}`)] : null,
    );

    const warnings = [];
    if (!enabled) {
      warnings.push(h("p", { class: "warning" }, h("strong", {}, "Disabled: "), account.disabled_reason || "no reason recorded"));
    }
    if (account.validation_url && !key) {
      warnings.push(
        h(
          "p",
          { class: "warning" },
          "Google asks you to verify this account again in a browser. ",
          externalLink(account.validation_url, "Verify the account with Google"),
          " then try it again.",
        ),
      );
    }
    const cooldowns = (account.cooldowns || []).length
      ? h(
          "div",
          { class: "cooldowns" },
          h("h3", {}, "Cooling down"),
          h(
            "ul",
            {},
            account.cooldowns.map((cooldown) =>
              h(
                "li",
                {},
                h("code", {}, cooldown.model_name),
                ` (${reasonText(cooldown.reason)}): back in `,
                countdown(cooldown.until, "a moment"),
              ),
            ),
          ),
        )
      : null;

    const toggle = button(enabled ? "Disable" : "Enable", (event) =>
      busy(
        event.currentTarget,
        async () => draw(await data("PUT", `accounts/${account.account_id}/status`, { body: { status: enabled ? 0 : 1 } })),
        { success: enabled ? `${label} is disabled.` : `${label} is enabled.` },
      ),
      { class: "secondary" },
    );
    const type = button(shared ? "Make dedicated" : "Share with the pool", (event) =>
      busy(
        event.currentTarget,
        async () => draw(await data("PUT", `accounts/${account.account_id}/type`, { body: { is_shared: shared ? 0 : 1 } })),
        { success: shared ? `${label} now serves its owner only.` : `${label} now serves the shared pool.` },
      ),
      { class: "secondary" },
    );
    const renameButton = button("Rename", () => rename.open(), { class: "secondary" });
    const quotasButton = button("Show quotas", () => quotas.toggle(quotasButton), {
      class: "secondary",
      "aria-expanded": "false",
      "aria-controls": quotas.el.id,
    });
    const remove = button(
      "Delete",
      async (event) => {
        const sure = await confirmAction({
          title: `Delete ${label}?`,
          message: key
            ? `The Gemini API key ${label} is removed from the gateway; the key itself still works at Google until you delete it there. Its usage history is kept. You can add it again later.`
            : `The account ${account.email} is removed from the gateway with its tokens and quotas. Its usage history is kept. You can add it again later.`,
          confirm: "Delete the account",
        });
        if (!sure) return;
        await busy(event.currentTarget, () => data("DELETE", `accounts/${account.account_id}`), { success: `${label} is deleted.` });
        await reload();
      },
      { class: "danger" },
    );

    clear(card);
    append(
      card,
      h(
        "header",
        { class: "card-head" },
        h("div", {}, h("h2", { id: headingId }, label), !key && label !== account.email ? h("p", { class: "muted" }, account.email) : null),
        h(
          "div",
          { class: "badges" },
          badge(key ? "Gemini API key" : "Google account", key ? "kind" : ""),
          badge(enabled ? "Enabled" : "Disabled", enabled ? "ok" : "bad"),
          badge(shared ? "Shared" : "Dedicated", shared ? "info" : ""),
        ),
      ),
      warnings,
      facts,
      cooldowns,
      h("div", { class: "actions" }, toggle, type, renameButton, quotasButton, remove),
      rename.el,
      quotas.el,
    );
  }

  draw(account);
  return card;
}

function renameForm(account, done) {
  const input = h("input", { type: "text", maxlength: "100", required: true, autocomplete: "off" });
  const error = h("div", {});
  const form = h(
    "form",
    { class: "inline-form", hidden: true, novalidate: true },
    field("New name", input, "1 to 100 characters; only you see it."),
    error,
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Save"), button("Cancel", () => close(), { class: "secondary" })),
  );
  function close() {
    form.hidden = true;
  }
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(error);
    const submit = form.querySelector('button[type="submit"]');
    submit.disabled = true;
    try {
      const updated = await data("PUT", `accounts/${account.account_id}/name`, { body: { name: input.value } });
      notify(`Renamed to ${updated.name}.`, "success");
      done(updated);
    } catch (failure) {
      error.append(errorBox(failure));
      input.focus();
    } finally {
      submit.disabled = false;
    }
  });
  return {
    el: form,
    open() {
      input.value = account.name || "";
      form.hidden = false;
      input.focus();
      input.select();
    },
  };
}

// --- quotas -------------------------------------------------------------------------

function quotasPanel(account) {
  const el = h("div", { class: "quotas", id: `quotas-${account.account_id}`, hidden: true });
  let loaded = false;

  async function load() {
    clear(el).append(h("p", { class: "muted" }, "Reading the quotas…"));
    try {
      const answer = await api("GET", `accounts/${account.account_id}/quotas`);
      loaded = true;
      drawQuotas(answer);
    } catch (error) {
      clear(el).append(errorBox(error), button("Try again", load, { class: "secondary" }));
    }
  }

  function drawQuotas(answer) {
    if (isKey(account)) {
      drawKeyQuotas(el, answer);
      return;
    }
    const rows = answer.data || [];
    const windows = answer.windows || [];
    const buckets = new Map();
    for (const win of windows) {
      const key = win.quota_group || win.bucket;
      if (!buckets.has(key)) buckets.set(key, []);
      buckets.get(key).push(win);
    }
    clear(el);
    if (answer.message) el.append(h("p", { class: "note" }, answer.message));
    el.append(h("h3", {}, "Quota windows"));
    if (!buckets.size) {
      el.append(h("p", { class: "muted" }, "Google has not reported 5-hour or weekly windows for this account yet."));
    }
    for (const [group, entries] of buckets) {
      el.append(
        h(
          "div",
          { class: "window-group" },
          h("h4", {}, groupName(group)),
          entries.map((win) =>
            h(
              "div",
              { class: "window-row" },
              h("span", { class: "window-name" }, WINDOW_NAMES[win.window] || win.window),
              quotaMeter(win.quota, `${groupName(group)}, ${WINDOW_NAMES[win.window] || win.window}: quota left`),
              h(
                "span",
                { class: "muted reset" },
                win.reset_time ? ["resets in ", countdown(win.reset_time, "now")] : "no reset time",
              ),
            ),
          ),
        ),
      );
    }
    el.append(h("h3", {}, "Models"));
    if (!rows.length) {
      el.append(h("p", { class: "muted" }, "No model quota is known yet: the gateway reads them from Google when it can."));
      return;
    }
    const body = h("tbody", {});
    for (const row of rows) body.append(modelRow(account, row));
    el.append(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", { class: "visually-hidden" }, `Model quotas of ${account.email}`),
          h(
            "thead",
            {},
            h("tr", {}, h("th", { scope: "col" }, "Model"), h("th", { scope: "col" }, "Group"), h("th", { scope: "col" }, "Left"), h("th", { scope: "col" }, "Resets"), h("th", { scope: "col" }, "Use")),
          ),
          body,
        ),
      ),
      h("p", { class: "muted small" }, "Read ", when(rows[0].last_fetched_at), ". A model switched off here is never used on this account until you switch it on again."),
    );
  }

  return {
    el,
    async toggle(control) {
      el.hidden = !el.hidden;
      control.setAttribute("aria-expanded", String(!el.hidden));
      control.textContent = el.hidden ? "Show quotas" : "Hide quotas";
      if (!el.hidden && !loaded) await load();
    },
  };
}

// A Gemini API key reports no fraction left: the models a 429 parked, until when, and what it
// served this Pacific day (when Google's daily quotas reset) against the daily allowance.
function drawKeyQuotas(el, answer) {
  const parked = answer.parked || [];
  const today = answer.today || {};
  const consumed = Math.max(0, Math.min(1, Number(today.quota_consumed) || 0));
  clear(el);
  if (answer.message) el.append(h("p", { class: "note" }, answer.message));
  el.append(
    h("h3", {}, "Today"),
    h(
      "div",
      { class: "tiles" },
      h("div", { class: "tile" }, h("span", { class: "tile-label" }, "Requests"), h("span", { class: "tile-value" }, fmt.int(today.requests))),
      h("div", { class: "tile" }, h("span", { class: "tile-label" }, "Tokens"), h("span", { class: "tile-value" }, fmt.int(today.tokens))),
    ),
    h(
      "div",
      { class: "window-row" },
      h("span", { class: "window-name" }, "Daily allowance"),
      h(
        "span",
        { class: "quota" },
        h("meter", { min: "0", max: "1", low: "0.5", high: "0.8", optimum: "0", value: String(consumed), "aria-label": "Share of the daily allowance used" }),
        h("span", { class: "quota-pct" }, consumed > 0 && consumed < 0.001 ? "< 0.1%" : fmt.pct(consumed)),
      ),
      h("span", { class: "muted reset" }, today.daily_tokens ? `used of ${fmt.compact(today.daily_tokens)} tokens a day` : "used"),
    ),
    h(
      "p",
      { class: "muted small" },
      "Since ",
      today.since ? h("time", { datetime: today.since }, fmt.date(today.since)) : "midnight",
      " (midnight Pacific time, when Google's daily quotas reset).",
    ),
    h("h3", {}, "Parked models"),
  );
  if (!parked.length) {
    el.append(h("p", { class: "muted" }, "No model is parked: every model of this key can serve."));
    return;
  }
  el.append(
    h(
      "ul",
      { class: "parked" },
      parked.map((entry) =>
        h("li", {}, h("code", {}, entry.model_name), ` (${reasonText(entry.reason)}): back in `, countdown(entry.until, "a moment")),
      ),
    ),
  );
}

function modelRow(account, row) {
  const tr = h("tr", {});
  function draw(current) {
    row = current;
    const on = row.status === 1;
    const toggle = button(on ? "On" : "Off", (event) =>
      busy(
        event.currentTarget,
        async () => draw(await data("PUT", `accounts/${account.account_id}/quotas/${encodeURIComponent(row.model_name)}/status`, { body: { status: on ? 0 : 1 } })),
        { success: on ? `${row.model_name} is switched off on this account.` : `${row.model_name} is switched on again.` },
      ),
      { class: ["switch", on ? "switch-on" : "switch-off"], "aria-pressed": String(on), "aria-label": `Use ${row.model_name} on this account` },
    );
    tr.replaceChildren(
      h("th", { scope: "row" }, h("code", {}, row.model_name)),
      h("td", {}, groupName(row.quota_group)),
      h("td", {}, quotaMeter(row.quota, `${row.model_name}: quota left`)),
      h("td", {}, row.reset_time ? countdown(row.reset_time, "now") : h("span", { class: "muted" }, "—")),
      h("td", {}, toggle),
    );
  }
  draw(row);
  return tr;
}

// --- adding an account ---------------------------------------------------------------

function addAccountFlow(ctx, added) {
  const id = "add-account";
  const shared = h("input", { type: "checkbox", id: "add-shared" });
  const owner = h("select", { id: "add-owner", required: true });
  const startButton = h("button", { type: "button", class: "primary" }, "Open Google's sign-in page");
  const started = h("div", { class: "step-status", role: "status" });
  const pasted = h("input", {
    type: "url",
    id: "add-callback",
    required: true,
    autocomplete: "off",
    spellcheck: "false",
    placeholder: "http://localhost:42532/oauth-callback?state=…&code=…",
  });
  const result = h("div", { class: "step-status", role: "status" });
  const finishButton = h("button", { type: "submit" }, "Add the account");
  const pasteForm = h(
    "form",
    { novalidate: true },
    field("The address from the address bar", pasted, "Paste the whole address, starting with http://localhost."),
    h("div", { class: "actions" }, finishButton),
  );

  const el = h(
    "section",
    { class: "card add-account", id, hidden: true, "aria-labelledby": "add-account-title" },
    h("h2", { id: "add-account-title" }, "Add a Google account"),
    h(
      "ol",
      { class: "steps" },
      h(
        "li",
        {},
        h("h3", {}, "Sign in with Google"),
        ctx.isAdmin ? field("Owner", owner, "The user whose account this will be.") : null,
        h(
          "div",
          { class: "check" },
          shared,
          h("label", { for: "add-shared" }, "Share it with the pool"),
          h("small", { class: "hint" }, "Shared accounts serve every contributing user; your own requests can then draw on the pool too."),
        ),
        h("p", {}, "Google's page opens in a new tab. Choose the account and allow access."),
        h("div", { class: "actions" }, startButton),
        started,
      ),
      h(
        "li",
        {},
        h("h3", {}, "Paste the address you land on"),
        h(
          "p",
          {},
          "Google then sends that tab to an address starting with ",
          h("code", {}, "http://localhost"),
          ", which does not load: that is expected. Copy the whole address from that tab's address bar and paste it here.",
        ),
        pasteForm,
      ),
      h("li", {}, h("h3", {}, "Done"), result),
    ),
    h("div", { class: "actions" }, button("Close", () => close(), { class: "secondary" })),
  );
  let opener = null;

  function close() {
    el.hidden = true;
    if (opener) {
      opener.setAttribute("aria-expanded", "false");
      opener.focus();
    }
  }

  startButton.addEventListener("click", async () => {
    clear(started);
    clear(result);
    const body = { is_shared: shared.checked ? 1 : 0 };
    if (ctx.isAdmin) {
      if (!owner.value) {
        started.append(errorBox("Choose the user who will own the account."));
        owner.focus();
        return;
      }
      body.user_id = Number(owner.value);
    }
    // Opened now, while the click still counts as one (a tab opened after the answer would be
    // blocked as a pop-up); sent on to Google's page once the gateway has answered.
    const tab = window.open("", "_blank");
    startButton.disabled = true;
    try {
      const answer = await data("POST", "oauth/authorize", { body });
      if (tab && !tab.closed) {
        tab.opener = null;
        tab.location.href = answer.auth_url;
      }
      const expires = new Date(Date.now() + answer.expires_in * 1000).toISOString();
      started.append(
        h(
          "p",
          {},
          tab ? "Google's page is open in a new tab. " : "Your browser blocked the new tab. ",
          externalLink(answer.auth_url, tab ? "Open it again" : "Open Google's sign-in page"),
          ". The link works once, for ",
          countdown(expires, "no longer: start again"),
          ".",
        ),
      );
      pasted.focus();
    } catch (error) {
      if (tab && !tab.closed) tab.close();
      started.append(errorBox(error));
    } finally {
      startButton.disabled = false;
    }
  });

  pasteForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(result);
    const value = pasted.value.trim();
    if (!value) {
      result.append(errorBox("Paste the address from the address bar first."));
      pasted.focus();
      return;
    }
    finishButton.disabled = true;
    try {
      const answer = await api("POST", "oauth/callback/manual", { body: { callback_url: value } });
      const account = answer.data;
      result.append(h("p", { class: "success-text" }, `${account.email}: ${answer.message || "account added"}.`));
      pasted.value = "";
      clear(started);
      notify(`${account.email} is ready to serve requests.`, "success");
      await added();
    } catch (error) {
      result.append(errorBox(error));
      pasted.focus();
    } finally {
      finishButton.disabled = false;
    }
  });

  return {
    el,
    async open(control) {
      opener = control;
      if (ctx.isAdmin) {
        const users = await ctx.users();
        options(owner, [["", "Choose a user…"], ...users.map((user) => [user.user_id, userLabel(user)])], owner.value);
      }
      el.hidden = false;
      control.setAttribute("aria-expanded", "true");
      el.querySelector("h2").setAttribute("tabindex", "-1");
      el.querySelector("h2").focus();
    },
  };
}

// --- adding a Gemini API key -----------------------------------------------------------

function addKeyFlow(added) {
  const id = "add-key";
  // The key is read once, sent, and gone from the field: nothing here keeps it.
  const secret = h("input", { type: "password", id: "add-key-value", required: true, autocomplete: "off", spellcheck: "false", maxlength: "200" });
  const name = h("input", { type: "text", id: "add-key-name", maxlength: "100", autocomplete: "off" });
  const shared = h("input", { type: "checkbox", id: "add-key-shared" });
  const result = h("div", { class: "step-status", role: "status" });
  const submit = h("button", { type: "submit" }, "Add the key");
  const form = h(
    "form",
    { novalidate: true },
    field("Gemini API key", secret, "From Google AI Studio. The gateway checks it with Google, then stores it sealed; it is never shown again."),
    field("Name (optional)", name, "Up to 100 characters; only you see it."),
    h(
      "div",
      { class: "check" },
      shared,
      h("label", { for: "add-key-shared" }, "Share it with the pool"),
      h("small", { class: "hint" }, "Shared keys serve every contributing user; your own requests can then draw on the pool too."),
    ),
    h("div", { class: "actions" }, submit, button("Close", () => close(), { class: "secondary" })),
    result,
  );
  const el = h(
    "section",
    { class: "card add-key", id, hidden: true, "aria-labelledby": "add-key-title" },
    h("h2", { id: "add-key-title" }, "Add a Gemini API key"),
    form,
  );
  let opener = null;

  function close() {
    el.hidden = true;
    secret.value = "";
    clear(result);
    if (opener) {
      opener.setAttribute("aria-expanded", "false");
      opener.focus();
    }
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(result);
    const body = { api_key: secret.value.trim(), is_shared: shared.checked ? 1 : 0 };
    secret.value = "";
    if (!body.api_key) {
      result.append(errorBox("Paste the key first."));
      secret.focus();
      return;
    }
    if (name.value.trim()) body.name = name.value.trim();
    submit.disabled = true;
    try {
      const answer = await api("POST", "accounts/gemini-key", { body });
      const account = answer.data;
      result.append(h("p", { class: "success-text" }, `${account.name}: ${answer.message || "key added"}.`));
      name.value = "";
      shared.checked = false;
      notify(`${account.name} is ready to serve requests.`, "success");
      await added();
    } catch (error) {
      result.append(errorBox(error));
      secret.focus();
    } finally {
      body.api_key = "";
      submit.disabled = false;
    }
  });

  return {
    el,
    open(control) {
      opener = control;
      el.hidden = false;
      control.setAttribute("aria-expanded", "true");
      el.querySelector("h2").setAttribute("tabindex", "-1");
      el.querySelector("h2").focus();
    },
  };
}
