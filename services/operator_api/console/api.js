// Signed calls to the operator API, and the operator's key for this tab.
//
// The key is kept in sessionStorage: it survives a reload of the tab and is gone when the tab
// is closed; it is never sent (only signatures are) and never logged. Any script running in
// this origin could read it, which is why the console is served with a Content-Security-Policy
// that allows scripts from this origin only and no inline script (docs/console.md).

import { canSign, importSecret, signedHeaders } from "./signing.js";

const STORAGE_KEY = "walletConsole.apiKey";

/** An error answered by the API (its code and message), or a request that got no answer. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** The signed-in key: its public key and the secret imported for signing. */
export class Session {
  constructor(publicKey, cryptoKey) {
    this.publicKey = publicKey;
    this.cryptoKey = cryptoKey;
  }

  /** `method` `path` with an optional JSON body; resolves to the parsed answer. */
  async call(method, path, body) {
    const text = body === undefined ? "" : JSON.stringify(body);
    const headers = await signedHeaders(this.cryptoKey, this.publicKey, text);
    if (text) headers["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: text || undefined,
        cache: "no-store",
        credentials: "omit",
      });
    } catch (cause) {
      throw new ApiError(
        0,
        "no_answer",
        "The request got no answer (network or server). Retrying the same action is safe.",
      );
    }
    const type = response.headers.get("content-type") ?? "";
    const data = type.includes("application/json") ? await response.json() : await response.text();
    if (!response.ok) {
      const code = data && typeof data === "object" && data.error ? data.error : `http_${response.status}`;
      const message = data && typeof data === "object" ? data.message ?? "" : "";
      throw new ApiError(response.status, code, message);
    }
    return data;
  }

  get(path) {
    return this.call("GET", path);
  }

  post(path, body) {
    return this.call("POST", path, body);
  }
}

/**
 * Sign in: check the key with one signed read (the trial balance, which any role may read) and
 * keep it for this tab only when the API accepted it.
 */
export async function signIn(publicKey, secretKey) {
  if (!canSign()) {
    throw new ApiError(
      0,
      "no_webcrypto",
      "This page is not a secure context (HTTPS or localhost), so the browser offers no WebCrypto to sign with.",
    );
  }
  const session = new Session(publicKey, await importSecret(secretKey));
  await session.get("/v1/trial-balance");
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ publicKey, secretKey }));
  return session;
}

/** The key kept for this tab, if any. */
export async function restoreSession() {
  const kept = sessionStorage.getItem(STORAGE_KEY);
  if (!kept || !canSign()) return null;
  try {
    const { publicKey, secretKey } = JSON.parse(kept);
    return new Session(publicKey, await importSecret(secretKey));
  } catch {
    sessionStorage.removeItem(STORAGE_KEY);
    return null;
  }
}

export function signOut() {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** A path with each segment encoded: ids are the operator's input. */
export function path(...segments) {
  return "/" + segments.map((s) => encodeURIComponent(s)).join("/");
}
