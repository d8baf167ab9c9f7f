/**
 * httpws.js: a browser client for the jupyter_http_over_ws protocol (served by trio_httpws and
 * by the original jupyter_http_over_ws extension).
 *
 * A page on one origin may not send cross-origin HTTP requests to a Jupyter server on
 * http://localhost, but it may open WebSockets there. This module tunnels HTTP requests through
 * one WebSocket (`/http_over_websocket`) and opens the kernel WebSockets through the proxy
 * (`/http_over_websocket/proxied_ws/...`). The proxy must allow the page's origin
 * (`Config(allow_origins=("https://your.page",))`, `--allow-origin`, TRIO_HTTPWS_ALLOW_ORIGIN).
 *
 * One ES module, no dependencies, no build step. Ships inside the Python package as
 * `trio_httpws/static/httpws.js`; copy it next to your page, e.g.
 * `importlib.resources.files("trio_httpws").joinpath("static/httpws.js").read_bytes()`.
 *
 * @example
 * import { connect, openProxiedWebSocket, executeCode } from "./httpws.js";
 * const base = "http://localhost:8889";
 * const authUrl = "http://localhost:8889/?token=...";   // the URL the user pasted
 * const client = await connect(base, { authUrl });
 * const created = await client.request("POST", "/api/sessions", {
 *   body: JSON.stringify({ path: "a.ipynb", type: "notebook", kernel: { name: "python3" } }),
 * });
 * const session = created.json();
 * const kernel = openProxiedWebSocket(
 *   base, `/api/kernels/${session.kernel.id}/channels?session_id=${randomId()}`, { authUrl });
 * console.log(await executeCode(kernel, "print(6*7)"));   // "42\n"
 *
 * Paths, as in the protocol (and trio_httpws.client): `request()` takes the path on the backend,
 * `openProxiedWebSocket()` a path under `baseUrl`. For a Jupyter with `base_url=/jupyter/`: the
 * `baseUrl` is `http://host:port/jupyter`, requests go to `/jupyter/api/sessions`, and kernel
 * channels are `/api/kernels/<id>/channels` (the proxy puts its base_url in front).
 *
 * @module httpws
 */

/** The protocol version this client speaks (jupyter_http_over_ws's `extension_version`). */
export const PROTOCOL_VERSION = "0.0.7";

/** The query parameter that carries the auth URL. */
export const AUTH_URL_PARAM = "jupyter_http_over_ws_auth_url";

/**
 * A complete proxied HTTP response.
 *
 * @typedef {object} HttpOverWsResponse
 * @property {number} status HTTP status (the proxy's own errors too: 400, 500, 502, ...).
 * @property {string} statusText The reason phrase.
 * @property {Object<string, string>} headers Header names in Http-Header-Case (`Content-Type`);
 *   repeated headers joined with ",".
 * @property {Uint8Array} body The whole body, reassembled from its frames.
 * @property {function(): string} text The body decoded as UTF-8.
 * @property {function(): *} json The body parsed as JSON.
 */

/**
 * An error that ends a request without a complete response: the socket closed, the request was
 * cancelled (`name === "AbortError"`), or the response was cut short (`status` is set).
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

/** A connected `/http_over_websocket` socket. Create it with {@link connect}. */
export class HttpOverWsClient {
  /** @param {WebSocket} ws an open WebSocket */
  constructor(ws) {
    /** The underlying WebSocket. @type {WebSocket} */
    this.ws = ws;
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
   * @param {AbortSignal} [options.signal] cancels the request when aborted
   * @returns {Promise<HttpOverWsResponse> & {messageId: string}}
   */
  request(method, path, { body, bodyBase64, signal } = {}) {
    const messageId = String(++this._nextId);
    const message = { message_id: messageId, method: method.toUpperCase(), path };
    if (bodyBase64 !== undefined) {
      message.body_base64 = bodyBase64;
    } else if (typeof body === "string") {
      message.body = body;
    } else if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) {
      const bytes =
        body instanceof ArrayBuffer
          ? new Uint8Array(body)
          : new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
      message.body_base64 = encodeBase64(bytes);
    } else if (body !== undefined && body !== null) {
      throw new TypeError("body must be a string, a Uint8Array or an ArrayBuffer");
    }
    const promise = new Promise((resolve, reject) => {
      if (this._closeEvent || this.ws.readyState !== WebSocket.OPEN) {
        reject(new HttpOverWsError("the connection is closed", this._closeEvent || {}));
        return;
      }
      this._pending.set(messageId, { resolve, reject, chunks: [], first: null });
      this.ws.send(JSON.stringify(message));
    });
    if (signal) {
      if (signal.aborted) this.cancel(messageId);
      else signal.addEventListener("abort", () => this.cancel(messageId), { once: true });
    }
    promise.messageId = messageId;
    return promise;
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
    pending.resolve({
      status: first.status,
      statusText: first.statusText || "",
      headers: first.headers || {},
      body,
      text: () => new TextDecoder().decode(body),
      json: () => JSON.parse(new TextDecoder().decode(body)),
    });
  }
}

/**
 * Open `/http_over_websocket` on the proxy at `baseUrl`.
 *
 * @param {string} baseUrl the proxy (or Jupyter) URL: `http(s)://host:port[/base_url]`
 * @param {object} [options]
 * @param {string} [options.authUrl] the URL the proxy fetches for the Jupyter login cookies,
 *   typically `http://localhost:PORT/?token=...`; same scheme, host and port as `baseUrl`.
 * @param {string} [options.minVersion="0.0.7"] lowest protocol version accepted
 * @returns {Promise<HttpOverWsClient>} resolves once the socket is open
 */
export async function connect(baseUrl, { authUrl, minVersion = PROTOCOL_VERSION } = {}) {
  const url = websocketUrl(baseUrl, "/http_over_websocket", {
    min_version: minVersion,
    [AUTH_URL_PARAM]: authUrl,
  });
  const ws = new WebSocket(url);
  await waitOpen(ws);
  return new HttpOverWsClient(ws);
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
