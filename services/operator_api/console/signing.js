// Swapgate API v2's request signature, as the operator API checks it
// (services/operator_api/signatures.py, libs/swapgate/signing.py):
//   x-api-signature = base64(HMAC-SHA256(key = secret key text as UTF-8,
//                                        message = timestamp digits + raw body + public key))
// computed with WebCrypto over exactly the bytes that are sent.

const encoder = new TextEncoder();
let lastTimestamp = 0;

/**
 * Unix milliseconds, never the same twice in this page: two requests with the same body in the
 * same millisecond would carry the same signature, which the server refuses as a replay.
 */
export function nextTimestamp() {
  lastTimestamp = Math.max(Date.now(), lastTimestamp + 1);
  return lastTimestamp;
}

/** Whether this page may use WebCrypto (only in a secure context: HTTPS, or localhost). */
export function canSign() {
  return Boolean(globalThis.crypto && globalThis.crypto.subtle);
}

/** The secret key as a non-extractable HMAC-SHA256 key for signing. */
export async function importSecret(secretKey) {
  return crypto.subtle.importKey(
    "raw",
    encoder.encode(secretKey),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
}

function base64(bytes) {
  let text = "";
  for (const byte of bytes) text += String.fromCharCode(byte);
  return btoa(text);
}

/** The x-api-signature of one request; `body` is the exact text sent ("" for a GET). */
export async function signature(cryptoKey, timestampMs, body, publicKey) {
  const message = encoder.encode(String(timestampMs) + body + publicKey);
  return base64(new Uint8Array(await crypto.subtle.sign("HMAC", cryptoKey, message)));
}

/** The three authentication headers of a request with this body. */
export async function signedHeaders(cryptoKey, publicKey, body) {
  const timestamp = nextTimestamp();
  return {
    "x-api-public-key": publicKey,
    "x-api-timestamp": String(timestamp),
    "x-api-signature": await signature(cryptoKey, timestamp, body, publicKey),
  };
}
