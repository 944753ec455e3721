// Admin: this instance, the users (a new key shown once), the quotas running low, and the
// shared pool's totals. Only the admin key sees this page (the API refuses anyone else).

import { data } from "./api.js";
import { badge, busy, button, clear, confirmAction, countdown, errorBox, field, fmt, h, quotaMeter, showSecret, when } from "./dom.js";

export const title = "Admin";

const USERS_PAGE = 50;

export async function render(root, ctx) {
  const info = await data("GET", "ui/info");
  const usersBox = h("div", {});
  const low = lowQuotas();
  const pool = h("div", {});

  root.append(
    h(
      "section",
      { class: "card", "aria-labelledby": "admin-instance-title" },
      h("h2", { id: "admin-instance-title" }, "This gateway"),
      h(
        "dl",
        { class: "facts" },
        h("dt", {}, "Gateway version"),
        h("dd", {}, info.gateway_version),
        h("dt", {}, "Upstream client version"),
        h("dd", {}, h("strong", { class: "client-version" }, info.upstream_client_version), info.upstream_client_fixed ? h("span", { class: "muted" }, " (fixed by upstream.user_agent)") : null),
        h("dt", {}, "User-Agent sent upstream"),
        h("dd", {}, h("code", {}, info.upstream_user_agent)),
        h("dt", {}, "Public URL"),
        h("dd", {}, info.public_url || h("span", { class: "muted" }, "not set (server.public_url): the request's own address")),
      ),
    ),
    usersSection(ctx, usersBox),
    h("section", { class: "card", "aria-labelledby": "admin-low-title" }, h("h2", { id: "admin-low-title" }, "Quotas running low"), low.el),
    h(
      "section",
      { class: "card", "aria-labelledby": "admin-pool-title" },
      h("h2", { id: "admin-pool-title" }, "Shared pool"),
      h("p", { class: "muted" }, "Totals over every enabled shared account, per model: the sum of what each account has left (1 = one account's full quota)."),
      pool,
    ),
  );
  await Promise.all([loadUsers(ctx, usersBox, 0), low.load(), loadPool(pool)]);
}

// --- users ----------------------------------------------------------------------------

function usersSection(ctx, box) {
  const name = h("input", { type: "text", maxlength: "200", autocomplete: "off" });
  const shared = h("input", { type: "checkbox", id: "new-user-shared" });
  const error = h("div", {});
  const form = h(
    "form",
    { class: "inline-form row", novalidate: true, "aria-label": "New user" },
    field("Name", name, "Who the user is; optional."),
    h("div", { class: "check" }, shared, h("label", { for: "new-user-shared" }, "Shared accounts first"), h("small", { class: "hint" }, "Serve this user from the pool before their own accounts.")),
    error,
    h("div", { class: "actions" }, h("button", { type: "submit", class: "primary" }, "Create the user")),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(error);
    const submit = form.querySelector('button[type="submit"]');
    submit.disabled = true;
    try {
      const created = await data("POST", "users", { body: { name: name.value.trim(), prefer_shared: shared.checked ? 1 : 0 } });
      form.reset();
      ctx.forgetUsers();
      await showSecret({
        title: `User ${created.name || created.user_id} created`,
        message: "This is the user's API key. Give it to them now: it is shown this once, never again.",
        secret: created.api_key,
      });
      await loadUsers(ctx, box, 0);
    } catch (failure) {
      error.append(errorBox(failure));
    } finally {
      submit.disabled = false;
    }
  });
  return h("section", { class: "card", "aria-labelledby": "admin-users-title" }, h("h2", { id: "admin-users-title" }, "Users"), form, box);
}

async function loadUsers(ctx, box, offset) {
  let page;
  try {
    page = await data("GET", "users", { query: { limit: USERS_PAGE, offset } });
  } catch (error) {
    clear(box).append(errorBox(error));
    return;
  }
  const reload = () => loadUsers(ctx, box, offset);
  const rows = page.users.map((user) => userRow(ctx, user, reload));
  const pager = h(
    "div",
    { class: "pager" },
    button("Previous", () => loadUsers(ctx, box, Math.max(0, offset - USERS_PAGE)), { class: "secondary", disabled: offset === 0 }),
    h("p", { class: "muted small" }, page.total ? `${offset + 1}–${offset + page.users.length} of ${page.total}` : "No user yet."),
    button("Next", () => loadUsers(ctx, box, offset + USERS_PAGE), { class: "secondary", disabled: offset + page.users.length >= page.total }),
  );
  clear(box).append(
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "users" },
        h("caption", { class: "visually-hidden" }, "Users"),
        h("thead", {}, h("tr", {}, ["User", "Status", "Serves first", "Key", "Created", "Actions"].map((text) => h("th", { scope: "col" }, text)))),
        h("tbody", {}, rows),
      ),
    ),
    pager,
  );
}

function userRow(ctx, user, reload) {
  const label = user.name || `user ${user.user_id}`;
  const enabled = user.status === 1;
  const toggle = button(enabled ? "Disable" : "Enable", (event) =>
    busy(
      event.currentTarget,
      async () => {
        await data("PUT", `users/${user.user_id}/status`, { body: { status: enabled ? 0 : 1 } });
        ctx.forgetUsers();
        await reload();
      },
      { success: enabled ? `${label} is disabled: their keys are refused.` : `${label} is enabled again.` },
    ),
    { class: "secondary" },
  );
  const regenerate = button(
    "New key",
    async (event) => {
      const sure = await confirmAction({
        title: `Give ${label} a new key?`,
        message: "Their current primary key stops working at once; the new one is shown once.",
        confirm: "Replace the key",
      });
      if (!sure) return;
      const updated = await busy(event.currentTarget, () => data("POST", `users/${user.user_id}/regenerate-key`));
      if (!updated) return;
      await showSecret({ title: `New key for ${label}`, message: "Give it to them now: it is shown this once, never again.", secret: updated.api_key });
      await reload();
    },
    { class: "secondary" },
  );
  const remove = button(
    "Delete",
    async (event) => {
      const sure = await confirmAction({
        title: `Delete ${label}?`,
        message: "The user, their keys, their Google accounts and their pools are deleted. Their usage history is kept.",
        confirm: "Delete the user",
      });
      if (!sure) return;
      await busy(event.currentTarget, () => data("DELETE", `users/${user.user_id}`), { success: `${label} is deleted.` });
      ctx.forgetUsers();
      await reload();
    },
    { class: "danger" },
  );
  return h(
    "tr",
    { dataset: { userId: user.user_id } },
    h("th", { scope: "row" }, label, h("small", { class: "muted" }, ` #${user.user_id}`)),
    h("td", {}, badge(enabled ? "Enabled" : "Disabled", enabled ? "ok" : "bad")),
    h("td", {}, user.prefer_shared ? "shared pool" : "own accounts"),
    h("td", {}, user.key_prefix ? h("code", {}, `${user.key_prefix}…`) : "—"),
    h("td", {}, when(user.created_at)),
    h("td", {}, h("div", { class: "actions compact" }, toggle, regenerate, remove)),
  );
}

// --- quotas -------------------------------------------------------------------------

function lowQuotas() {
  const threshold = h("input", { type: "number", min: "0", max: "1", step: "0.05", value: "0.1", inputmode: "decimal" });
  const box = h("div", {});
  const form = h(
    "form",
    { class: "inline-form row", novalidate: true, "aria-label": "Threshold" },
    field("Below", threshold, "A fraction of the quota, 0 to 1."),
    h("div", { class: "actions" }, h("button", { type: "submit", class: "secondary" }, "Show")),
  );
  async function load() {
    let rows;
    try {
      rows = await data("GET", "quotas/low", { query: { threshold: threshold.value } });
    } catch (error) {
      clear(box).append(errorBox(error));
      return;
    }
    clear(box);
    if (!rows.length) {
      box.append(h("p", { class: "muted" }, `No enabled model quota is below ${fmt.pct(Number(threshold.value))}.`));
      return;
    }
    box.append(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", { class: "visually-hidden" }, "Quotas running low"),
          h("thead", {}, h("tr", {}, ["Account", "User", "Model", "Left", "Resets"].map((text) => h("th", { scope: "col" }, text)))),
          h(
            "tbody",
            {},
            rows.map((row) =>
              h(
                "tr",
                {},
                h("th", { scope: "row" }, row.email, h("small", { class: "muted" }, ` #${row.account_id}${row.is_shared ? " · shared" : ""}`)),
                h("td", {}, `user ${row.user_id}`),
                h("td", {}, h("code", {}, row.model_name)),
                h("td", {}, quotaMeter(row.quota, `${row.model_name} on ${row.email}: quota left`)),
                h("td", {}, row.reset_time ? countdown(row.reset_time, "now") : "—"),
              ),
            ),
          ),
        ),
      ),
    );
  }
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form.querySelector('button[type="submit"]'), load);
  });
  return { el: h("div", {}, form, box), load };
}

async function loadPool(box) {
  let rows;
  try {
    rows = await data("GET", "quotas/shared-pool");
  } catch (error) {
    clear(box).append(errorBox(error));
    return;
  }
  clear(box);
  if (!rows.length) {
    box.append(h("p", { class: "muted" }, "No enabled shared account: the pool is empty."));
    return;
  }
  box.append(
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h("caption", { class: "visually-hidden" }, "Shared pool per model"),
        h("thead", {}, h("tr", {}, ["Model", "Group", "Total left", "Accounts serving", "Earliest reset"].map((text) => h("th", { scope: "col" }, text)))),
        h(
          "tbody",
          {},
          rows.map((row) =>
            h(
              "tr",
              {},
              h("th", { scope: "row" }, h("code", {}, row.model_name)),
              h("td", {}, row.quota_group),
              h("td", { class: "num" }, row.total_quota.toFixed(2)),
              h("td", { class: "num" }, `${row.available_accounts} of ${row.total_accounts}`),
              h("td", {}, row.earliest_reset_time ? countdown(row.earliest_reset_time, "now") : "—"),
            ),
          ),
        ),
      ),
    ),
  );
}
