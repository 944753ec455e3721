// The console's shell: sign-in, the navigation between pages (#/accounts, #/usage,
// #/keys, #/admin: a fragment never reaches the server or its logs), and the clock
// that keeps countdowns current.

import { ApiError, data, onUnauthorized, session } from "./api.js";
import { button, clear, errorBox, h, notify, tick } from "./dom.js";
import * as accounts from "./accounts.js";
import * as admin from "./admin.js";
import * as keys from "./keys.js";
import * as usage from "./usage.js";

const PAGES = { accounts, usage, keys, admin };
const DEFAULT_PAGE = "accounts";

const $ = (id) => document.getElementById(id);
let me = null;
let users = null;
let generation = 0;

/** What every page gets: who is signed in, and (for the admin) the users to choose from. */
function context() {
  return {
    me,
    isAdmin: Boolean(me && me.is_admin),
    signedInPrefix: (session.key() || "").slice(0, 10),
    async users() {
      if (!me || !me.is_admin) return [];
      if (!users) users = (await data("GET", "users", { query: { limit: 1000 } })).users;
      return users;
    },
    forgetUsers() {
      users = null;
    },
  };
}

function currentPage() {
  const match = /^#\/([a-z]+)/.exec(window.location.hash);
  const name = match ? match[1] : DEFAULT_PAGE;
  if (!PAGES[name] || (name === "admin" && !(me && me.is_admin))) return DEFAULT_PAGE;
  return name;
}

async function show(name = currentPage()) {
  generation += 1;
  const mine = generation;
  const page = PAGES[name];
  for (const link of document.querySelectorAll("#nav a[data-page]")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${page.title} · antigv console`;
  const root = $("page");
  const section = h("section", { class: "page-body", "aria-labelledby": `${name}-title` });
  const heading = h("h1", { id: `${name}-title`, tabindex: "-1" }, page.title);
  const body = h("div", {}, h("p", { class: "muted loading" }, "Loading…"));
  section.append(heading, body);
  root.setAttribute("aria-busy", "true");
  root.replaceChildren(section);
  heading.focus({ preventScroll: true });
  try {
    const content = h("div", {});
    await page.render(content, context());
    if (mine === generation) body.replaceWith(content);
  } catch (error) {
    if (mine !== generation) return;
    if (error instanceof ApiError && error.status === 401) return; // signed out already
    body.replaceChildren(
      errorBox(error),
      button("Try again", () => show(name)),
    );
  } finally {
    if (mine === generation) root.setAttribute("aria-busy", "false");
  }
}

function showSignedIn() {
  $("signin").hidden = true;
  $("nav").hidden = false;
  $("who").hidden = false;
  $("nav-admin").hidden = !me.is_admin;
  $("who-name").textContent = me.is_admin ? "admin" : `${me.name || "user"} · user ${me.user_id}`;
  show();
}

function showSignIn(message) {
  me = null;
  users = null;
  generation += 1;
  $("nav").hidden = true;
  $("who").hidden = true;
  clear($("page"));
  $("signin").hidden = false;
  const error = $("signin-error");
  error.hidden = !message;
  error.textContent = message || "";
  document.title = "Sign in · antigv console";
  $("signin-key").focus();
}

function signOut(message) {
  session.clear();
  showSignIn(message);
}

async function signIn(event) {
  event.preventDefault();
  const input = $("signin-key");
  const submit = $("signin-submit");
  const key = input.value.trim();
  const error = $("signin-error");
  if (!key) {
    error.textContent = "Enter your API key.";
    error.hidden = false;
    input.focus();
    return;
  }
  submit.disabled = true;
  try {
    me = await data("GET", "user/me", { key });
    session.store(key);
    input.value = "";
    error.hidden = true;
    showSignedIn();
  } catch (failure) {
    error.textContent = failure.message;
    error.hidden = false;
    input.select();
  } finally {
    submit.disabled = false;
  }
}

async function start() {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", () => signOut());
  window.addEventListener("hashchange", () => {
    if (me && /^#\//.test(window.location.hash)) show();
  });
  onUnauthorized((error) => {
    if (me) signOut(`Signed out: ${error.message}`);
  });
  setInterval(tick, 1000);
  if (!session.key()) {
    showSignIn();
    return;
  }
  try {
    me = await data("GET", "user/me");
    showSignedIn();
  } catch (error) {
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
      signOut(error.message);
    } else {
      showSignIn(error.message);
    }
  }
}

// Modules run after the document is parsed.
start().catch((error) => notify(error.message || String(error), "error"));
