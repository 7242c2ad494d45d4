// The page's client of the server's native API: same-origin fetches, the API key when the server wants one, and
// NDJSON streams read line by line as they arrive.

const KEY_ITEM = "corral.apiKey";

let askForKey = null; // (refused: boolean) => Promise<string | null>, set by the page
let pendingAsk = null;
let sessionKey = null; // the key, when the browser's storage is disabled

/** Set how the page asks the user for a key after a 401 (a dialog); without it a 401 is returned as is. */
export function onKeyNeeded(ask) {
  askForKey = ask;
}

function storedKey() {
  try {
    return localStorage.getItem(KEY_ITEM);
  } catch (_) {
    return null;
  }
}

async function newKey(refused) {
  // One dialog however many requests were refused at once; they all retry with its answer.
  if (!pendingAsk) {
    pendingAsk = askForKey(refused).finally(() => {
      pendingAsk = null;
    });
  }
  const key = await pendingAsk;
  if (key) {
    try {
      localStorage.setItem(KEY_ITEM, key);
    } catch (_) {
      // storage disabled: the key lasts as long as the page
    }
    sessionKey = key;
  }
  return key;
}

/**
 * fetch() a path of this server (relative to the page, so a reverse proxy's prefix is kept). On a 401 the user is
 * asked for the key once, and the request is sent again with it; a key the server refuses is asked for again.
 */
export async function api(path, { method = "GET", body, signal } = {}) {
  for (;;) {
    const key = storedKey() || sessionKey;
    const headers = { Accept: "application/json, application/x-ndjson" };
    if (key) headers.Authorization = "Bearer " + key;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, signal, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.status !== 401 || !askForKey) return response;
    const current = storedKey() || sessionKey;
    if (current && current !== key) continue; // another request already got a new key
    const fresh = await newKey(Boolean(key));
    if (!fresh) return response;
  }
}

/** The server's error text for a failed response: Ollama's {"error": "..."} or the status line. */
export async function errorText(response) {
  const text = await response.text().catch(() => "");
  try {
    const parsed = JSON.parse(text);
    if (parsed && typeof parsed.error === "string") return parsed.error;
    if (parsed && parsed.error && typeof parsed.error.message === "string") return parsed.error.message;
  } catch (_) {
    // not JSON
  }
  return text.trim() || `${response.status} ${response.statusText}`.trim();
}

/** The objects of an NDJSON response body, each as soon as its line is complete. */
export async function* ndjson(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let newline;
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) yield JSON.parse(line);
      }
    }
    if (buffer.trim()) yield JSON.parse(buffer);
  } finally {
    reader.cancel().catch(() => {}); // a consumer that stops early closes the connection
  }
}
