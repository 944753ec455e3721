// The JSON API, as the console calls it. URLs are relative to the page (/ui/ -> ../api/),
// so the console works behind a proxy's path prefix (server.public_url) unchanged. The
// key is kept in this tab's sessionStorage and sent in the Authorization header only.

const STORAGE_KEY = "antigv.apiKey";

export const API_BASE = new URL("../api/", document.baseURI);

/** The address clients should use: server.public_url when set, else the page's origin and prefix. */
export function publicUrl() {
  const meta = document.querySelector('meta[name="antigv-public-url"]');
  const configured = meta ? meta.content.trim() : "";
  if (configured) return configured;
  return new URL("..", document.baseURI).href.replace(/\/$/, "");
}

export class ApiError extends Error {
  constructor(message, { status = 0, code = null, param = null, retryAfter = null } = {}) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.param = param;
    this.retryAfter = retryAfter;
  }
}

let unauthorized = () => {};

/** Called when the stored key stops working (revoked, regenerated, user disabled). */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

export const session = {
  key() {
    try {
      return sessionStorage.getItem(STORAGE_KEY);
    } catch {
      return null;
    }
  },
  store(key) {
    sessionStorage.setItem(STORAGE_KEY, key);
  },
  clear() {
    try {
      sessionStorage.removeItem(STORAGE_KEY);
    } catch {
      // storage unavailable: nothing was kept
    }
  },
};

function describe(response, document) {
  const error = document && typeof document === "object" && document.error ? document.error : null;
  if (error && typeof error.message === "string" && error.message) return error;
  if (response.status === 502 || response.status === 504) {
    return { message: `The gateway could not be reached through the proxy (HTTP ${response.status}). Try again shortly.` };
  }
  return { message: `The gateway answered HTTP ${response.status} without an explanation.` };
}

/**
 * Call the API: ``api("GET", "accounts")``, ``api("PUT", `accounts/${id}/status`, {body: {status: 0}})``.
 * Resolves to the whole answer ({success, data, message, ...}); rejects with an ApiError
 * whose message is the API's ``error.message``, which says what to do.
 */
export async function api(method, path, { body, query, key } = {}) {
  const url = new URL(path.replace(/^\/+/, ""), API_BASE);
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") url.searchParams.set(name, String(value));
  }
  const headers = { Accept: "application/json" };
  const token = key ?? session.key();
  if (token) headers.Authorization = `Bearer ${token}`;
  const init = {
    method,
    headers,
    // API answers are never stored by the browser: they hold keys, accounts and usage.
    cache: "no-store",
    credentials: "omit",
    referrerPolicy: "no-referrer",
    redirect: "error",
  };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError("The gateway did not answer. Check that it is running and your connection, then try again.");
  }
  let document = null;
  try {
    document = await response.json();
  } catch {
    document = null;
  }
  if (response.ok && document && document.success !== false) return document;
  const error = describe(response, document);
  const retryAfter = Number(response.headers.get("Retry-After")) || null;
  let message = error.message;
  if (retryAfter && !/retry|again/i.test(message)) message += ` Try again in ${retryAfter} s.`;
  const failure = new ApiError(message, { status: response.status, code: error.code, param: error.param, retryAfter });
  if (response.status === 401 && key === undefined) unauthorized(failure);
  throw failure;
}

/** The ``data`` of an answer. */
export async function data(method, path, options) {
  return (await api(method, path, options)).data;
}
