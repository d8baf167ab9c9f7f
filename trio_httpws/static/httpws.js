/**
 * httpws.js: a browser client for a Jupyter runtime on another origin (e.g. http://localhost),
 * served by trio_httpws, by a Jupyter that answers CORS, or by the original jupyter_http_over_ws
 * extension.
 *
 * Two ways to reach the runtime, one API ({@link connect} picks):
 * - direct (Colab's flow since 2025): credentialed cross-origin `fetch()` calls to the runtime's
 *   REST API and kernel WebSockets opened straight to it, the token in the query. Needs a
 *   runtime that answers CORS with credentials for the page's origin: trio_httpws does for the
 *   origins it allows (`Config(allow_origins=("https://your.page",))`, `--allow-origin`,
 *   TRIO_HTTPWS_ALLOW_ORIGIN), a plain Jupyter only with `allow_origin` and `allow_credentials`.
 * - tunnel (the jupyter_http_over_ws protocol, Colab's flow from 2018): HTTP requests through one
 *   WebSocket (`/http_over_websocket`), kernel WebSockets through the proxy
 *   (`/http_over_websocket/proxied_ws/...`). The runtime needs no CORS, but must allow the
 *   page's origin for WebSockets.
 *
 * One ES module, no dependencies, no build step. Ships inside the Python package as
 * `trio_httpws/static/httpws.js`; copy it next to your page, e.g.
 * `importlib.resources.files("trio_httpws").joinpath("static/httpws.js").read_bytes()`.
 *
 * @example
 * import { connect, executeCode, randomId } from "./httpws.js";
 * const base = "http://localhost:8889";
 * const authUrl = "http://localhost:8889/?token=...";   // the URL the user pasted
 * const client = await connect(base, { authUrl });       // direct if it can, else the tunnel
 * console.log(client.transport);                         // "direct" or "tunnel"
 * const created = await client.request("POST", "/api/sessions", {
 *   body: JSON.stringify({ path: "a.ipynb", type: "notebook", kernel: { name: "python3" } }),
 * });
 * const session = created.json();
 * const kernel = client.openWebSocket(
 *   `/api/kernels/${session.kernel.id}/channels?session_id=${randomId()}`);
 * console.log(await executeCode(kernel, "print(6*7)"));   // "42\n"
 *
 * Paths, as in the protocol (and trio_httpws.client): `request()` takes the path on the backend,
 * `openWebSocket()` a path under `baseUrl`. For a Jupyter with `base_url=/jupyter/`: the
 * `baseUrl` is `http://host:port/jupyter`, requests go to `/jupyter/api/sessions`, and kernel
 * channels are `/api/kernels/<id>/channels` (the base URL is put in front).
 *
 * @module httpws
 */

/** The protocol version this client speaks (jupyter_http_over_ws's `extension_version`). */
export const PROTOCOL_VERSION = "0.0.7";

/** The query parameter that carries the auth URL. */
export const AUTH_URL_PARAM = "jupyter_http_over_ws_auth_url";

/** The query parameter that carries the token on the direct transport (Jupyter's). */
export const TOKEN_PARAM = "token";

/**
 * A complete HTTP response, the same shape on both transports.
 *
 * @typedef {object} HttpOverWsResponse
 * @property {number} status HTTP status (the proxy's own errors too: 400, 403, 500, 502, ...).
 * @property {string} statusText The reason phrase.
 * @property {Object<string, string>} headers Header names in Http-Header-Case (`Content-Type`);
 *   repeated headers joined with "," (", " on the direct transport). On the direct transport
 *   only the headers CORS lets a page read: `Content-Type`, `Content-Length`, `Cache-Control`,
 *   `Last-Modified` and the like.
 * @property {Uint8Array} body The whole body.
 * @property {function(): string} text The body decoded as UTF-8.
 * @property {function(): *} json The body parsed as JSON.
 */

/**
 * An error that ends a request without a complete response: the socket closed or the runtime
 * could not be reached, the request was cancelled (`name === "AbortError"`), or the response was
 * cut short (`status` is set). Also what {@link connect} rejects with.
 */
export class HttpOverWsError extends Error {
  /**
   * @param {string} message
   * @param {{name?: string, status?: number, code?: number, reason?: string}} [details]
   */
  constructor(message, details = {}) {
    super(message);
    this.name = details.name || "HttpOverWsError";
    /** HTTP status of a failed response, if any. @type {number|undefined} */
    this.status = details.status;
    /** WebSocket close code, if the socket closed. @type {number|undefined} */
    this.code = details.code;
    /** WebSocket close reason, if the socket closed. @type {string|undefined} */
    this.reason = details.reason;
  }
}

/**
 * A random hex string (works outside secure contexts, unlike `crypto.randomUUID`).
 * @param {number} [bytes=16]
 * @returns {string}
 */
export function randomId(bytes = 16) {
  const raw = crypto.getRandomValues(new Uint8Array(bytes));
  return Array.from(raw, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Jupyter's page routes: the first path segment that is one of these starts a page (what the
 * address bar showed), not the server's base URL. The same list as `trio_httpws/_pasted.py`.
 */
export const JUPYTER_PAGES = Object.freeze([
  "tree", "lab", "notebooks", "edit", "doc", "consoles", "terminals", "login",
]);

/**
 * A URL as the user pasted it (`http://localhost:8888/tree?token=...`), read by the rule every
 * part of trio_httpws uses: a known Jupyter page is cut off, and what comes before it is the base
 * URL (`/u/a/tree?token=` keeps `/u/a/`). A path with no known page is only a candidate: `connect`
 * asks `<base>api/status` whether it is Jupyter's.
 *
 * @param {string} pasted
 * @returns {{baseUrl: string, token: string|null, cut: string|null}} `baseUrl` ends with "/";
 *   `cut` is the page path that was cut off (tell the user), or null
 * @throws {TypeError} for a URL that cannot name a Jupyter server (the message shows no token)
 */
export function splitPastedUrl(pasted) {
  const text = String(pasted).trim();
  // Up to the query (a token may follow) and without a `user:password@`: what errors may show.
  const shown = text.split("?", 1)[0].split("#", 1)[0].replace(/\/\/[^/@\s'"]*@/g, "//…@");
  let url;
  try {
    url = new URL(text);
  } catch {
    throw new TypeError(`not a URL: '${shown}'`);
  }
  if ((url.protocol !== "http:" && url.protocol !== "https:") || !url.hostname) {
    throw new TypeError(
      "the URL must start with http:// or https:// and name a host, e.g. " +
        `http://localhost:8888/?token=...; got '${shown}'`,
    );
  }
  if (url.username || url.password) {
    throw new TypeError(
      "the URL must not carry a user name or password: Jupyter's login is the token, " +
        "e.g. http://localhost:8888/?token=...",
    );
  }
  let segments = url.pathname.split("/");
  let cut = null;
  const page = segments.findIndex((segment) => JUPYTER_PAGES.includes(segment));
  if (page !== -1) {
    cut = "/" + segments.slice(page).join("/").replace(/\/+$/, "");
    segments = segments.slice(0, page);
  }
  const path = segments.join("/").replace(/\/+$/, "") + "/";
  return { baseUrl: url.origin + path, token: url.searchParams.get(TOKEN_PARAM) || null, cut };
}

/**
 * The ws:// (or wss://) URL of `path` under `baseUrl`, with extra query parameters.
 * @param {string} baseUrl `http(s)://host:port[/base]`
 * @param {string} path a path relative to the base, with an optional query
 * @param {Object<string, string|undefined>} [params] added to the query when not undefined
 * @returns {string}
 */
export function websocketUrl(baseUrl, path, params = {}) {
  const base = new URL(baseUrl);
  if (base.protocol !== "http:" && base.protocol !== "https:") {
    throw new TypeError(`baseUrl must be http(s)://host:port, got ${baseUrl}`);
  }
  const prefix = base.pathname.replace(/\/+$/, "");
  const url = new URL(prefix + "/" + path.replace(/^\/+/, ""), base);
  url.protocol = base.protocol === "https:" ? "wss:" : "ws:";
  url.hash = "";
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== null) url.searchParams.append(name, value);
  }
  return url.href;
}

/** @param {string} data */
function decodeBase64(data) {
  if (typeof Uint8Array.fromBase64 === "function") return Uint8Array.fromBase64(data);
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** @param {Uint8Array} bytes */
function encodeBase64(bytes) {
  if (typeof bytes.toBase64 === "function") return bytes.toBase64();
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** @param {Uint8Array[]} chunks */
function concat(chunks) {
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

/** @param {string} name e.g. "content-type" -> "Content-Type" (the protocol's header case) */
function httpHeaderCase(name) {
  return name
    .split("-")
    .map((word) => word.charAt(0).toUpperCase() + word.slice(1).toLowerCase())
    .join("-");
}

/**
 * @param {number} status
 * @param {string} statusText
 * @param {Object<string, string>} headers
 * @param {Uint8Array} body
 * @returns {HttpOverWsResponse}
 */
function makeResponse(status, statusText, headers, body) {
  return {
    status,
    statusText,
    headers,
    body,
    text: () => new TextDecoder().decode(body),
    json: () => JSON.parse(new TextDecoder().decode(body)),
  };
}

/**
 * A request body as text or bytes.
 * @param {string|Uint8Array|ArrayBuffer|undefined|null} body
 * @returns {string|Uint8Array|undefined}
 */
function requestBody(body) {
  if (body === undefined || body === null) return undefined;
  if (typeof body === "string") return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) {
    return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  }
  throw new TypeError("body must be a string, a Uint8Array or an ArrayBuffer");
}

/**
 * `promise` tagged with its request's `messageId`, cancelled by `cancel(messageId)` when
 * `signal` aborts.
 * @param {Promise<HttpOverWsResponse>} promise
 * @param {string} messageId
 * @param {AbortSignal|undefined} signal
 * @param {function(string): void} cancel
 * @returns {Promise<HttpOverWsResponse> & {messageId: string}}
 */
function cancellable(promise, messageId, signal, cancel) {
  if (signal) {
    if (signal.aborted) cancel(messageId);
    else signal.addEventListener("abort", () => cancel(messageId), { once: true });
  }
  promise.messageId = messageId;
  return promise;
}

/**
 * Resolves once `ws` is open; rejects if it closes first (a refused handshake, e.g. an origin
 * the proxy does not allow, shows up in browsers only as close code 1006).
 * @param {WebSocket} ws
 * @returns {Promise<WebSocket>}
 */
export function waitOpen(ws) {
  if (ws.readyState === WebSocket.OPEN) return Promise.resolve(ws);
  if (ws.readyState !== WebSocket.CONNECTING) {
    return Promise.reject(new HttpOverWsError(`WebSocket ${ws.url} is already closed`));
  }
  return new Promise((resolve, reject) => {
    const onOpen = () => {
      ws.removeEventListener("close", onClose);
      resolve(ws);
    };
    const onClose = (event) => {
      ws.removeEventListener("open", onOpen);
      reject(
        new HttpOverWsError(
          `could not open WebSocket ${ws.url.split("?")[0]}: closed with code ${event.code}` +
            (event.reason ? ` (${event.reason})` : "") +
            (event.code === 1006 ? " (refused or unreachable: is this origin allowed?)" : ""),
          { code: event.code, reason: event.reason },
        ),
      );
    };
    ws.addEventListener("open", onOpen, { once: true });
    ws.addEventListener("close", onClose, { once: true });
  });
}

/**
 * The tunnel transport: a connected `/http_over_websocket` socket. Create it with
 * {@link connect}.
 */
export class HttpOverWsClient {
  /**
   * @param {WebSocket} ws an open WebSocket
   * @param {object} [options] what {@link HttpOverWsClient#openWebSocket} needs
   * @param {string} [options.baseUrl] as for {@link connect}
   * @param {string} [options.authUrl] as for {@link connect}
   */
  constructor(ws, { baseUrl, authUrl } = {}) {
    /** Which way this client reaches the runtime. @type {"tunnel"} */
    this.transport = "tunnel";
    /** The underlying WebSocket. @type {WebSocket} */
    this.ws = ws;
    this._baseUrl = baseUrl;
    this._authUrl = authUrl;
    /** @type {Map<string, {resolve: Function, reject: Function, chunks: Uint8Array[], first: object|null}>} */
    this._pending = new Map();
    /** message_ids cancelled by us: their late frames are dropped. @type {Set<string>} */
    this._cancelled = new Set();
    this._nextId = 0;
    this._closeEvent = null;
    /**
     * Resolves with `{code, reason}` when the socket has closed.
     * @type {Promise<{code: number, reason: string}>}
     */
    this.closed = new Promise((resolve) => {
      ws.addEventListener("close", (event) => {
        this._closeEvent = { code: event.code, reason: event.reason };
        const error = new HttpOverWsError(
          `connection closed (code ${event.code}${event.reason ? ": " + event.reason : ""})`,
          { code: event.code, reason: event.reason },
        );
        for (const pending of this._pending.values()) pending.reject(error);
        this._pending.clear();
        resolve(this._closeEvent);
      });
    });
    ws.addEventListener("message", (event) => this._onMessage(event.data));
  }

  /**
   * Send one HTTP request through the proxy.
   *
   * Resolves with the complete response whatever its status (like `fetch`); rejects with an
   * {@link HttpOverWsError} if the socket closes first, the request is cancelled, or the
   * response is cut short. The returned promise carries the request's `messageId` (for
   * {@link HttpOverWsClient#cancel}).
   *
   * @param {string} method e.g. "GET", "POST"
   * @param {string} path path and query on the backend, e.g. "/api/sessions?x=1"
   * @param {object} [options]
   * @param {string|Uint8Array|ArrayBuffer} [options.body] text (sent as UTF-8) or bytes
   * @param {string} [options.bodyBase64] a body already base64-encoded
   * @param {Object<string, string>} [options.headers] ignored here: the protocol has no
   *   per-request headers (the backend gets those of the WebSocket handshake)
   * @param {AbortSignal} [options.signal] cancels the request when aborted
   * @returns {Promise<HttpOverWsResponse> & {messageId: string}}
   */
  request(method, path, { body, bodyBase64, signal } = {}) {
    const messageId = String(++this._nextId);
    const message = { message_id: messageId, method: method.toUpperCase(), path };
    const data = bodyBase64 === undefined ? requestBody(body) : undefined;
    if (bodyBase64 !== undefined) message.body_base64 = bodyBase64;
    else if (typeof data === "string") message.body = data;
    else if (data !== undefined) message.body_base64 = encodeBase64(data);
    const promise = new Promise((resolve, reject) => {
      if (this._closeEvent || this.ws.readyState !== WebSocket.OPEN) {
        reject(new HttpOverWsError("the connection is closed", this._closeEvent || {}));
        return;
      }
      this._pending.set(messageId, { resolve, reject, chunks: [], first: null });
      this.ws.send(JSON.stringify(message));
    });
    return cancellable(promise, messageId, signal, (id) => this.cancel(id));
  }

  /**
   * Stop a request in flight: its promise rejects with an `AbortError` at once. trio_httpws
   * then stops the backend request (a `{"message_id": id, "cancel": true}` message, its
   * extension to the protocol); the original extension answers that message with a 400 frame,
   * which is ignored, and lets the request run to its end unread.
   * @param {string} messageId the `messageId` of the promise `request()` returned
   */
  cancel(messageId) {
    const pending = this._pending.get(messageId);
    if (!pending) return;
    this._pending.delete(messageId);
    this._cancelled.add(messageId);
    pending.reject(new HttpOverWsError(`request ${messageId} cancelled`, { name: "AbortError" }));
    if (this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify({ message_id: messageId, cancel: true }));
    }
  }

  /**
   * Open a WebSocket on the backend through the proxy, typically a kernel's channels: see
   * {@link openProxiedWebSocket}.
   * @param {string} path relative to the base URL, with its query
   * @param {{protocols?: string|string[]}} [options]
   * @returns {WebSocket}
   */
  openWebSocket(path, { protocols } = {}) {
    if (this._baseUrl === undefined) {
      throw new TypeError("openWebSocket needs the client's baseUrl: create it with connect()");
    }
    return openProxiedWebSocket(this._baseUrl, path, { authUrl: this._authUrl, protocols });
  }

  /**
   * Close the socket; requests still in flight reject.
   * @param {number} [code=1000]
   * @param {string} [reason]
   * @returns {Promise<{code: number, reason: string}>} resolves once closed
   */
  close(code = 1000, reason = "") {
    this.ws.close(code, reason);
    return this.closed;
  }

  /** @param {string|ArrayBuffer|Blob} data */
  _onMessage(data) {
    if (typeof data !== "string") return; // the protocol only sends text frames
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      console.warn("httpws: ignoring a frame that is not JSON", data);
      return;
    }
    const id = frame.message_id === undefined ? undefined : String(frame.message_id);
    const pending = id === undefined ? undefined : this._pending.get(id);
    if (!pending) {
      if (id !== undefined && this._cancelled.has(id)) {
        if (frame.done) this._cancelled.delete(id);
      } else {
        console.warn("httpws: frame for no request in flight", frame);
      }
      return;
    }
    if (pending.first !== null && frame.status !== undefined) {
      // A status after the first frame: the proxy's error frame ending a truncated response.
      this._pending.delete(id);
      pending.reject(
        new HttpOverWsError(`response cut short: ${frame.status} ${frame.statusText || ""}`, {
          status: frame.status,
        }),
      );
      return;
    }
    if (pending.first === null) pending.first = frame;
    if (frame.data) pending.chunks.push(decodeBase64(frame.data));
    if (!frame.done) return;
    this._pending.delete(id);
    const first = pending.first;
    const body = concat(pending.chunks);
    pending.resolve(makeResponse(first.status, first.statusText || "", first.headers || {}, body));
  }
}

/**
 * The direct transport: the runtime's REST API with credentialed cross-origin `fetch()` calls
 * and WebSockets opened straight to it, the token in every query, as Colab does. Create it with
 * {@link connect}.
 *
 * Every request is a `fetch()` with `credentials: "include"` (the runtime's cookies go along
 * where the browser allows it) and `cache: "no-store"`. A body without a `Content-Type` among
 * `headers` is sent as `application/json` (text) or `application/octet-stream` (bytes): Jupyter's
 * API takes JSON, and a declared type makes the browser ask the runtime first (a CORS preflight)
 * instead of sending a "simple" text/plain request.
 */
export class DirectClient {
  /**
   * @param {string} baseUrl as for {@link connect}
   * @param {object} [options]
   * @param {string} [options.token] the runtime's token, sent as `?token=` on every request
   */
  constructor(baseUrl, { token } = {}) {
    const base = new URL(baseUrl);
    if (base.protocol !== "http:" && base.protocol !== "https:") {
      throw new TypeError(`baseUrl must be http(s)://host:port, got ${baseUrl}`);
    }
    /** Which way this client reaches the runtime. @type {"direct"} */
    this.transport = "direct";
    /** @type {string} */
    this.baseUrl = baseUrl;
    this._origin = base.origin;
    this._token = token;
    /** Requests in flight, by messageId. @type {Map<string, AbortController>} */
    this._inFlight = new Map();
    this._nextId = 0;
    this._closed = false;
  }

  /** @param {string} path path and query on the backend */
  _url(path) {
    const url = this._origin + "/" + path.replace(/^\/+/, "");
    if (!this._token) return url;
    // Appended, not set through URLSearchParams, which would re-encode the caller's query.
    const separator = url.includes("?") ? "&" : "?";
    return `${url}${separator}${TOKEN_PARAM}=${encodeURIComponent(this._token)}`;
  }

  /**
   * Send one HTTP request to the runtime; as {@link HttpOverWsClient#request}.
   *
   * Resolves with the complete response whatever its status; rejects with an
   * {@link HttpOverWsError} if the runtime cannot be reached or does not answer CORS for this
   * page (the browser tells a page no more than that), the request is cancelled, or the response
   * is cut short.
   *
   * @param {string} method e.g. "GET", "POST"
   * @param {string} path path and query on the backend, e.g. "/api/sessions?x=1"
   * @param {object} [options]
   * @param {string|Uint8Array|ArrayBuffer} [options.body] text (sent as UTF-8) or bytes
   * @param {string} [options.bodyBase64] a body already base64-encoded
   * @param {Object<string, string>} [options.headers] request headers, e.g. a `Content-Type`
   * @param {AbortSignal} [options.signal] cancels the request when aborted
   * @returns {Promise<HttpOverWsResponse> & {messageId: string}}
   */
  request(method, path, { body, bodyBase64, headers = {}, signal } = {}) {
    const messageId = String(++this._nextId);
    const data = bodyBase64 === undefined ? requestBody(body) : decodeBase64(bodyBase64);
    const sent = new Headers(headers);
    if (data !== undefined && !sent.has("Content-Type")) {
      const type = typeof data === "string" ? "application/json" : "application/octet-stream";
      sent.set("Content-Type", type);
    }
    const what = `${method.toUpperCase()} ${path.split("?")[0]}`;
    const controller = new AbortController();
    this._inFlight.set(messageId, controller);
    const run = async () => {
      if (this._closed) throw new HttpOverWsError("the client is closed");
      let response;
      try {
        response = await fetch(this._url(path), {
          method: method.toUpperCase(),
          headers: sent,
          body: data,
          credentials: "include",
          cache: "no-store",
          signal: controller.signal,
        });
      } catch (error) {
        throw failure(error, what, "failed: unreachable, or no CORS answer for this origin");
      }
      let bytes;
      try {
        bytes = new Uint8Array(await response.arrayBuffer());
      } catch (error) {
        throw failure(error, what, `response cut short: ${response.status}`, response.status);
      }
      const names = {};
      response.headers.forEach((value, name) => (names[httpHeaderCase(name)] = value));
      return makeResponse(response.status, response.statusText, names, bytes);
    };
    const promise = run().finally(() => this._inFlight.delete(messageId));
    return cancellable(promise, messageId, signal, (id) => this.cancel(id));
  }

  /**
   * Stop a request in flight: its promise rejects with an `AbortError`, and the browser drops
   * the connection that carried it.
   * @param {string} messageId the `messageId` of the promise `request()` returned
   */
  cancel(messageId) {
    this._inFlight.get(messageId)?.abort();
  }

  /**
   * Open a WebSocket straight to the runtime (`ws://host:port/<base>/<path>?...&token=...`),
   * typically a kernel's channels. Returns the browser's WebSocket at once (still connecting; see
   * {@link waitOpen}); its `binaryType` is "arraybuffer".
   * @param {string} path relative to the base URL, with its query, e.g.
   *   `/api/kernels/<id>/channels?session_id=<random>`
   * @param {{protocols?: string|string[]}} [options]
   * @returns {WebSocket}
   */
  openWebSocket(path, { protocols } = {}) {
    const url = websocketUrl(this.baseUrl, path, { [TOKEN_PARAM]: this._token });
    const ws = protocols === undefined ? new WebSocket(url) : new WebSocket(url, protocols);
    ws.binaryType = "arraybuffer";
    return ws;
  }

  /**
   * Cancel the requests in flight; later requests reject.
   * @returns {Promise<void>}
   */
  async close() {
    this._closed = true;
    for (const controller of this._inFlight.values()) controller.abort();
  }
}

/**
 * @param {*} error what fetch() or reading the body threw
 * @param {string} what the request, e.g. "GET /api/status" (never its query: it holds the token)
 * @param {string} problem
 * @param {number} [status]
 */
function failure(error, what, problem, status) {
  if (error && error.name === "AbortError") {
    return new HttpOverWsError(`${what} cancelled`, { name: "AbortError" });
  }
  return new HttpOverWsError(`${what} ${problem} (${error})`, { status });
}

/** The transports {@link connect} knows. */
export const TRANSPORTS = Object.freeze(["auto", "direct", "tunnel"]);

/**
 * Connect to the runtime at `baseUrl`: directly if it answers CORS for this page, else through
 * the tunnel. Both clients have the same `transport`, `request()`, `cancel()`,
 * `openWebSocket()` and `close()`.
 *
 * With `transport: "auto"` (the default) and a token (`token`, or the `token` query parameter of
 * `authUrl`), the direct transport is tried first with one credentialed
 * `GET <baseUrl>/api/status?token=...`: the lightest Jupyter call that needs the token, and a
 * "simple" request (no preflight), so one round trip tells both whether the runtime answers CORS
 * with credentials for this origin and whether the token is good. If that fetch rejects (no
 * usable CORS answer: an old runtime, the original extension, a Jupyter without
 * `allow_credentials`; or nothing listening), `connect` falls back to the tunnel. If the runtime
 * answers but not with 200 (a wrong token: 403), it rejects with that status: the tunnel would
 * be told the same. Without a token it goes straight to the tunnel, whose auth URL logs in
 * server-side (a cross-site page cannot rely on the runtime's cookies).
 *
 * @param {string} baseUrl the runtime (the proxy, or Jupyter) URL: `http(s)://host:port[/base_url]`,
 *   or the URL as pasted, read by {@link splitPastedUrl}: a Jupyter page (`/tree`, `/lab/...`) is
 *   cut off (said on the console), and its `token` is used when no other is given
 * @param {object} [options]
 * @param {string} [options.authUrl] the URL the user pasted, typically
 *   `http://localhost:PORT/?token=...`, on the same scheme, host and port as `baseUrl`: the
 *   tunnel's proxy fetches it for the Jupyter login cookies.
 * @param {string} [options.token] the runtime's token (default: from `authUrl`)
 * @param {"auto"|"direct"|"tunnel"} [options.transport="auto"] "direct" or "tunnel" only tries
 *   that one
 * @param {string} [options.minVersion="0.0.7"] lowest tunnel protocol version accepted
 * @returns {Promise<DirectClient|HttpOverWsClient>} resolves once connected
 */
export async function connect(
  baseUrl,
  { authUrl, token, transport = "auto", minVersion = PROTOCOL_VERSION } = {},
) {
  if (!TRANSPORTS.includes(transport)) {
    throw new TypeError(`transport must be one of ${TRANSPORTS.join(", ")}, got ${transport}`);
  }
  const pasted = splitPastedUrl(baseUrl);
  if (pasted.cut) {
    console.info(
      `httpws: ${pasted.cut} is a Jupyter page, not part of the server's URL: ` +
        `using ${pasted.baseUrl}`,
    );
  }
  // Without its query from here on: the token must not show in an error message.
  baseUrl = pasted.baseUrl;
  const known = token ?? tokenFrom(authUrl) ?? pasted.token ?? undefined;
  if (transport === "tunnel" || (transport === "auto" && !known)) {
    return connectTunnel(baseUrl, { authUrl, minVersion });
  }
  const client = new DirectClient(baseUrl, { token: known });
  const basePath = new URL(baseUrl).pathname.replace(/\/+$/, "");
  let status;
  try {
    status = await client.request("GET", `${basePath}/api/status`);
  } catch (error) {
    if (transport === "direct") throw error;
    const tunnelAuthUrl =
      authUrl ?? `${baseUrl.replace(/\/+$/, "")}/?${TOKEN_PARAM}=${encodeURIComponent(known)}`;
    try {
      return await connectTunnel(baseUrl, { authUrl: tunnelAuthUrl, minVersion });
    } catch (tunnelError) {
      throw new HttpOverWsError(
        `could not connect to ${baseUrl}: directly, ${error.message}; ` +
          `through the tunnel, ${tunnelError.message}`,
        { code: tunnelError.code, reason: tunnelError.reason },
      );
    }
  }
  if (status.status !== 200) {
    const hint =
      status.status === 403
        ? " (is the token right?)"
        : status.status === 404
          ? `: ${baseUrl} is not a Jupyter server's URL; paste the URL Jupyter printed, ` +
            "e.g. http://localhost:8888/?token=..."
          : "";
    // hypercorn (h11) sends no reason phrase, so statusText is often empty.
    const text = status.statusText ? ` ${status.statusText}` : "";
    throw new HttpOverWsError(
      `could not connect to ${baseUrl}: GET ${basePath}/api/status answered ` +
        `${status.status}${text}${hint}`,
      { status: status.status },
    );
  }
  return client;
}

/** @param {string|undefined} authUrl */
function tokenFrom(authUrl) {
  if (!authUrl) return undefined;
  return new URL(authUrl).searchParams.get(TOKEN_PARAM) || undefined;
}

/**
 * @param {string} baseUrl
 * @param {{authUrl?: string, minVersion: string}} options
 * @returns {Promise<HttpOverWsClient>}
 */
async function connectTunnel(baseUrl, { authUrl, minVersion }) {
  const url = websocketUrl(baseUrl, "/http_over_websocket", {
    min_version: minVersion,
    [AUTH_URL_PARAM]: authUrl,
  });
  const ws = new WebSocket(url);
  await waitOpen(ws);
  return new HttpOverWsClient(ws, { baseUrl, authUrl });
}

/**
 * Open a WebSocket on the backend through the proxy (`/http_over_websocket/proxied_ws/<path>`),
 * typically a kernel's channels. Returns the browser's WebSocket at once (still connecting; see
 * {@link waitOpen}); its `binaryType` is "arraybuffer".
 *
 * @param {string} baseUrl as for {@link connect}
 * @param {string} path relative to the base URL, with its query, e.g.
 *   `/api/kernels/<id>/channels?session_id=<random>`
 * @param {object} [options]
 * @param {string} [options.authUrl] as for {@link connect}
 * @param {string|string[]} [options.protocols] WebSocket subprotocols to ask for
 * @returns {WebSocket}
 */
export function openProxiedWebSocket(baseUrl, path, { authUrl, protocols } = {}) {
  const url = websocketUrl(baseUrl, "/http_over_websocket/proxied_ws/" + path.replace(/^\/+/, ""), {
    [AUTH_URL_PARAM]: authUrl,
  });
  const ws = protocols === undefined ? new WebSocket(url) : new WebSocket(url, protocols);
  ws.binaryType = "arraybuffer";
  return ws;
}

/**
 * Run `code` on a kernel through its channels WebSocket (Jupyter's JSON message format, i.e. no
 * subprotocol) and resolve with what it printed on stdout, once the kernel has replied and gone
 * idle. Rejects with the Python exception (`"NameError: name 'x' is not defined"`) if the cell
 * fails, if the socket closes, or after `timeoutMs`.
 *
 * @param {WebSocket} kernelWs from {@link openProxiedWebSocket} (open or still connecting)
 * @param {string} code
 * @param {object} [options]
 * @param {number} [options.timeoutMs=60000]
 * @param {string} [options.session] the Jupyter client session id for the message header
 * @param {function(string): void} [options.onStdout] called with each piece of stdout as it comes
 * @returns {Promise<string>}
 */
export async function executeCode(kernelWs, code, { timeoutMs = 60000, session, onStdout } = {}) {
  await waitOpen(kernelWs);
  const msgId = randomId();
  return new Promise((resolve, reject) => {
    const printed = [];
    let replied = false;
    let idle = false;
    let failure = null;
    const finish = (error) => {
      clearTimeout(timer);
      kernelWs.removeEventListener("message", onMessage);
      kernelWs.removeEventListener("close", onClose);
      if (error) reject(error);
      else resolve(printed.join(""));
    };
    const timer = setTimeout(
      () => finish(new HttpOverWsError(`no reply from the kernel within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const onClose = (event) =>
      finish(
        new HttpOverWsError(`kernel WebSocket closed (code ${event.code} ${event.reason})`, {
          code: event.code,
          reason: event.reason,
        }),
      );
    const onMessage = (event) => {
      if (typeof event.data !== "string") return; // binary: messages with buffers, not ours
      const msg = JSON.parse(event.data);
      if (!msg.parent_header || msg.parent_header.msg_id !== msgId) return;
      const content = msg.content || {};
      if (msg.msg_type === "stream" && content.name === "stdout") {
        printed.push(content.text);
        if (onStdout) onStdout(content.text);
      } else if (msg.msg_type === "execute_reply") {
        replied = true;
        if (content.status !== "ok") {
          failure = new HttpOverWsError(
            content.ename ? `${content.ename}: ${content.evalue}` : `execution ${content.status}`,
          );
        }
      } else if (msg.msg_type === "status" && content.execution_state === "idle") {
        idle = true;
      }
      // The reply (shell) and the output (iopub) are not ordered with respect to each other:
      // the cell is over once both the reply and iopub's "idle" have arrived.
      if (replied && idle) finish(failure);
    };
    kernelWs.addEventListener("message", onMessage);
    kernelWs.addEventListener("close", onClose);
    kernelWs.send(
      JSON.stringify({
        header: {
          msg_id: msgId,
          username: "httpws",
          session: session || randomId(),
          msg_type: "execute_request",
          version: "5.3",
          date: new Date().toISOString(),
        },
        parent_header: {},
        metadata: {},
        content: {
          code,
          silent: false,
          store_history: true,
          user_expressions: {},
          allow_stdin: false,
          stop_on_error: true,
        },
        channel: "shell",
        buffers: [],
      }),
    );
  });
}
