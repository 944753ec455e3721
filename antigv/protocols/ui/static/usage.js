// Usage: requests and tokens per day and per model, the usage log page by page, and the
// shared pool's balance and recovery.

import { data } from "./api.js";
import { stackedBars } from "./chart.js";
import { badge, busy, button, clear, errorBox, field, fmt, h, nextId, options, quotaMeter, userLabel } from "./dom.js";

export const title = "Usage";

const PAGE_SIZES = [25, 50, 100];

function isoDay(date) {
  return date.toISOString().slice(0, 10);
}

function daysBetween(start, end) {
  const days = [];
  const day = new Date(`${start}T00:00:00Z`);
  const last = new Date(`${end}T00:00:00Z`);
  while (day <= last && days.length < 400) {
    days.push(isoDay(day));
    day.setUTCDate(day.getUTCDate() + 1);
  }
  return days;
}

export async function render(root, ctx) {
  const today = isoDay(new Date());
  const weekAgo = isoDay(new Date(Date.now() - 6 * 86400000));
  const from = h("input", { type: "date", value: weekAgo, max: today });
  const to = h("input", { type: "date", value: today, max: today });
  const keySelect = h("select", {});
  const userSelect = h("select", {});
  const filters = h(
    "form",
    { class: "filters card", novalidate: true, "aria-label": "Filters" },
    field("From (UTC day)", from),
    field("To (UTC day)", to),
    ctx.isAdmin ? field("User", userSelect) : null,
    field("Key", keySelect),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Show")),
  );

  const keys = await data("GET", "keys");
  const keyNames = new Map(keys.map((key) => [key.key_id, key.name]));
  function fillKeys() {
    const user = ctx.isAdmin ? userSelect.value : "";
    const shown = keys.filter((key) => !user || String(key.user_id) === user);
    options(keySelect, [["", "All keys"], ...shown.map((key) => [key.key_id, `${key.name} (${key.key_prefix}…)`])], keySelect.value);
  }
  if (ctx.isAdmin) {
    const users = await ctx.users();
    options(userSelect, [["", "All users"], ...users.map((user) => [user.user_id, userLabel(user)])]);
    userSelect.addEventListener("change", fillKeys);
  }
  fillKeys();

  const summary = h("div", { class: "tiles" });
  const metric = metricSwitch(() => drawChart());
  const chartBox = h("div", {});
  const perModel = h("div", {});
  const log = usageLog(keyNames);
  const pool = h("div", {});
  // The range's requests summed per UTC day and model (GET /api/quotas/consumption/daily).
  let days = [];
  let range = { start: weekAgo, end: today };

  function query() {
    return {
      start_date: from.value,
      end_date: to.value,
      key_id: keySelect.value,
      user_id: ctx.isAdmin ? userSelect.value : "",
    };
  }

  function drawChart() {
    clear(chartBox);
    const axis = daysBetween(range.start, range.end);
    const byModel = new Map();
    for (const day of days) {
      const index = axis.indexOf(day.day);
      if (index < 0) continue;
      if (!byModel.has(day.model_name)) byModel.set(day.model_name, axis.map(() => 0));
      byModel.get(day.model_name)[index] += metric.value() === "tokens" ? day.total_tokens : day.requests;
    }
    const series = [...byModel].map(([name, values]) => ({ name, values })).sort((a, b) => a.name.localeCompare(b.name));
    if (!series.length) {
      chartBox.append(h("p", { class: "muted empty-chart" }, "No request in this range."));
      return;
    }
    const unit = metric.value() === "tokens" ? "tokens" : "requests";
    chartBox.append(stackedBars({ days: axis, series, unit, caption: `${unit === "tokens" ? "Tokens" : "Requests"} per day and model, ${range.start} to ${range.end} (UTC)` }));
  }

  function drawSummary() {
    const sum = (name) => days.reduce((total, day) => total + day[name], 0);
    const total = sum("requests");
    const errors = sum("errors");
    const latency = total ? Math.round(sum("latency_ms_total") / total) : null;
    const tile = (label, value, note) => h("div", { class: "tile" }, h("span", { class: "tile-label" }, label), h("strong", { class: "tile-value" }, value), note ? h("small", { class: "muted" }, note) : null);
    summary.replaceChildren(
      tile("Requests", fmt.int(total)),
      tile("Tokens", fmt.compact(sum("total_tokens"))),
      tile("Not ok", fmt.int(errors), total ? fmt.pct(errors / total) : null),
      tile("Mean latency", latency === null ? "—" : `${fmt.int(latency)} ms`),
    );
  }

  function drawPerModel() {
    const models = new Map();
    for (const day of days) {
      const entry = models.get(day.model_name) || { requests: 0, prompt: 0, completion: 0, reasoning: 0, total: 0, quota: 0, settled: 0 };
      entry.requests += day.requests;
      entry.prompt += day.prompt_tokens;
      entry.completion += day.completion_tokens;
      entry.reasoning += day.reasoning_tokens;
      entry.total += day.total_tokens;
      entry.quota += day.quota_consumed;
      entry.settled += day.settled_requests;
      models.set(day.model_name, entry);
    }
    clear(perModel);
    if (!models.size) return;
    const head = ["Model", "Requests", "Prompt", "Completion", "Reasoning", "Total tokens", "Quota used"];
    perModel.append(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          {},
          h("caption", {}, "Per model"),
          h("thead", {}, h("tr", {}, head.map((name) => h("th", { scope: "col" }, name)))),
          h(
            "tbody",
            {},
            [...models].sort((a, b) => b[1].requests - a[1].requests).map(([name, m]) =>
              h(
                "tr",
                {},
                h("th", { scope: "row" }, h("code", {}, name)),
                [m.requests, m.prompt, m.completion, m.reasoning, m.total].map((n) => h("td", { class: "num" }, fmt.int(n))),
                h("td", { class: "num" }, m.settled ? fmt.pct(m.quota) : "—"),
              ),
            ),
          ),
        ),
      ),
    );
  }

  /** Reads the pool of the chosen user; the function it returns draws it. */
  async function readPool() {
    const user = ctx.isAdmin ? userSelect.value : String(ctx.me.user_id);
    if (!user) return () => pool.replaceChildren(h("p", { class: "muted" }, "Choose a user above to see their pool."));
    try {
      const pools = await data("GET", "quotas/user", { query: ctx.isAdmin ? { user_id: user } : {} });
      return () => pool.replaceChildren(poolTable(pools));
    } catch (error) {
      return () => pool.replaceChildren(errorBox(error));
    }
  }

  async function load() {
    const wanted = query();
    // Every part answers the same filter: read them all, then draw them together, so
    // the page never shows tiles of one range beside a log of another.
    const [summed, drawLog, drawPool] = await Promise.all([data("GET", "quotas/consumption/daily", { query: wanted }), log.load(wanted), readPool()]);
    days = summed;
    range = { start: wanted.start_date || weekAgo, end: wanted.end_date || today };
    drawSummary();
    drawChart();
    drawPerModel();
    drawLog();
    drawPool();
  }

  filters.addEventListener("submit", (event) => {
    event.preventDefault();
    if (from.value && to.value && to.value < from.value) {
      from.setCustomValidity("The first day must not be after the last.");
      from.reportValidity();
      return;
    }
    from.setCustomValidity("");
    busy(filters.querySelector('button[type="submit"]'), load);
  });

  await load();
  root.append(
    filters,
    h("section", { class: "card", "aria-labelledby": "usage-chart-title" }, h("div", { class: "card-head" }, h("h2", { id: "usage-chart-title" }, "Requests and tokens"), metric.el), summary, chartBox, perModel),
    h("section", { class: "card", "aria-labelledby": "usage-log-title" }, h("h2", { id: "usage-log-title" }, "Usage log"), log.el),
    h(
      "section",
      { class: "card", "aria-labelledby": "usage-pool-title" },
      h("h2", { id: "usage-pool-title" }, "Shared pool"),
      h("p", { class: "muted" }, "Requests a shared account serves are charged to your pool, per quota group. Its maximum is 2 per shared account you contribute, and it recovers a fifth of that every hour."),
      pool,
    ),
  );
}

function metricSwitch(onChange) {
  const name = nextId("metric");
  const make = (value, label, checked) => {
    const input = h("input", { type: "radio", name, value, checked, id: `${name}-${value}` });
    input.addEventListener("change", onChange);
    return h("span", { class: "segment" }, input, h("label", { for: input.id }, label));
  };
  const el = h("fieldset", { class: "segmented" }, h("legend", { class: "visually-hidden" }, "Show"), make("requests", "Requests", true), make("tokens", "Tokens", false));
  return {
    el,
    value: () => el.querySelector("input:checked").value,
  };
}

function poolTable(pools) {
  if (!pools.length) return h("p", { class: "muted" }, "No pool yet.");
  const now = Date.now();
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", { class: "visually-hidden" }, "Pool balance per quota group"),
      h("thead", {}, h("tr", {}, ["Quota group", "Balance", "Recovery", "Models"].map((name) => h("th", { scope: "col" }, name)))),
      h(
        "tbody",
        {},
        pools.map((p) => {
          const rate = p.recovery_per_hour;
          const missing = Math.max(0, p.max_quota - p.quota);
          let recovery;
          if (!(p.max_quota > 0)) recovery = "no shared account of yours: the pool is closed";
          else if (missing <= 1e-9) recovery = `full (recovers ${rate.toFixed(2)} an hour)`;
          else recovery = `+${rate.toFixed(2)} an hour, full ${fmt.relative(new Date(now + (missing / rate) * 3600000).toISOString())}`;
          return h(
            "tr",
            {},
            h("th", { scope: "row" }, p.quota_group),
            h("td", {}, p.max_quota > 0 ? quotaMeter(p.quota / p.max_quota, `${p.quota_group} pool balance`) : null, h("span", { class: "muted small" }, ` ${p.quota.toFixed(2)} of ${p.max_quota.toFixed(2)}`)),
            h("td", {}, recovery),
            h("td", { class: "models-cell" }, p.models.length ? p.models.join(", ") : (p.patterns || []).join(", ")),
          );
        }),
      ),
    ),
  );
}

/** The log, a page at a time, newest first: "Older" reads on from the last row shown. */
function usageLog(keyNames) {
  const size = h("select", {});
  options(size, PAGE_SIZES.map((n) => [n, `${n} a page`]), 25);
  const body = h("div", {});
  const status = h("p", { class: "muted small", role: "status" });
  const newer = button("Newer", () => move(-1), { class: "secondary" });
  const older = button("Older", () => move(1), { class: "secondary" });
  const el = h("div", {}, h("div", { class: "toolbar" }, field("Rows", size)), body, h("div", { class: "pager" }, newer, status, older));
  // cursors[i]: the last row (log_id) of page i - 1; page 0 starts at the filter's own end.
  let cursors = [];
  let page = 0;
  let filter = {};
  let lastRows = [];

  /** Reads the current page; the function it returns draws it. */
  async function readPage() {
    const limit = Number(size.value);
    const query = { ...filter, limit: limit + 1 };
    if (page > 0) query.before_id = cursors[page];
    const answer = await data("GET", "quotas/consumption", { query });
    return () => {
      lastRows = answer.slice(0, limit);
      draw(lastRows);
      newer.disabled = page === 0;
      older.disabled = answer.length <= limit;
      status.textContent = lastRows.length ? `Page ${page + 1}` : "";
    };
  }

  async function read() {
    (await readPage())();
  }

  async function move(step) {
    if (step > 0) {
      cursors[page + 1] = lastRows[lastRows.length - 1].log_id;
    }
    page += step;
    await busy(null, read);
  }

  function draw(rows) {
    clear(body);
    if (!rows.length) {
      body.append(h("p", { class: "muted" }, "No request in this range."));
      return;
    }
    const head = ["When", "Model", "Status", "Prompt", "Completion", "Latency", "Served by", "Key"];
    body.append(
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "log" },
          h("caption", { class: "visually-hidden" }, "Usage log, newest first"),
          h("thead", {}, h("tr", {}, head.map((name) => h("th", { scope: "col" }, name)))),
          h(
            "tbody",
            {},
            rows.map((row) =>
              h(
                "tr",
                {},
                h("td", {}, h("time", { datetime: row.consumed_at, title: row.consumed_at }, fmt.date(row.consumed_at))),
                h("td", {}, h("code", {}, row.model_name), row.surface === "messages" ? h("small", { class: "muted" }, " messages") : null),
                h("td", {}, badge(row.status, row.status === "ok" ? "ok" : "bad")),
                h("td", { class: "num" }, fmt.int(row.prompt_tokens)),
                h("td", { class: "num" }, fmt.int(row.completion_tokens)),
                h("td", { class: "num" }, `${fmt.int(row.latency_ms)} ms`),
                h("td", {}, row.account_id === null ? "—" : `${row.is_shared ? "shared" : "dedicated"} #${row.account_id}`),
                h("td", {}, row.key_id === null ? "—" : keyNames.get(row.key_id) || `#${row.key_id}`),
              ),
            ),
          ),
        ),
      ),
    );
  }

  size.addEventListener("change", () => {
    cursors = [];
    page = 0;
    busy(null, read);
  });

  return {
    el,
    async load(wanted) {
      filter = { ...wanted };
      cursors = [];
      page = 0;
      return readPage();
    },
  };
}

