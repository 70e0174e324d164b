// One thin transport: the pywebview JS bridge inside the desktop window, JSON POSTs in a browser.

const params = new URLSearchParams(window.location.search);

// The launch token comes with the page URL; keep it for reloads that lose the query string.
const TOKEN = (() => {
  const fromUrl = params.get("token");
  if (fromUrl) {
    try { sessionStorage.setItem("sst_token", fromUrl); } catch (_) { /* storage disabled */ }
    return fromUrl;
  }
  try { return sessionStorage.getItem("sst_token") || ""; } catch (_) { return ""; }
})();

/** True when the page runs inside the pywebview window. */
export function inWindow() {
  return params.get("mode") === "window" || Boolean(window.pywebview);
}

export function token() {
  return TOKEN;
}

/** Append the launch token to a same-origin URL (image, mask, thumbnail) unless it has one. */
export function withToken(url) {
  if (!url || !TOKEN || /[?&]token=/.test(url)) return url;
  return url + (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

// pywebview creates window.pywebview.api first and fills in its methods later, then fires
// "pywebviewready": wait until the method we need is really there.
function bridgeMethod(name) {
  const api = window.pywebview && window.pywebview.api;
  return api && typeof api[name] === "function" ? api : null;
}

function waitForBridge(name) {
  const ready = bridgeMethod(name);
  if (ready) return Promise.resolve(ready);
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let timer = null;
    const check = () => {
      const api = bridgeMethod(name);
      if (api) {
        clearInterval(timer);
        window.removeEventListener("pywebviewready", check);
        resolve(api);
      } else if (Date.now() - started > 60000) { // a loaded machine can take long to start the bridge
        clearInterval(timer);
        window.removeEventListener("pywebviewready", check);
        const known = window.pywebview && window.pywebview.api && Object.keys(window.pywebview.api).length;
        reject(new Error(known ? `Unknown API method ${name}` : "The desktop bridge did not start; restart SST Desktop."));
      }
    };
    window.addEventListener("pywebviewready", check);
    timer = setInterval(check, 50);
  });
}

function errorText(err) {
  if (!err) return "Unknown error";
  if (typeof err === "string") return err;
  return err.message || String(err);
}

/** Call an Api method by name; resolves with its result, rejects with an Error carrying its message. */
export async function call(name, ...args) {
  if (inWindow()) {
    const api = await waitForBridge(name);
    try {
      return await api[name](...args);
    } catch (err) {
      throw new Error(errorText(err));
    }
  }
  let response;
  try {
    response = await fetch("/api/" + name + "?token=" + encodeURIComponent(TOKEN), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ args }),
    });
  } catch (err) {
    throw new Error("Cannot reach the SST Desktop server: " + errorText(err));
  }
  let payload = null;
  try {
    payload = await response.json();
  } catch (_) {
    payload = null;
  }
  if (response.status === 401 || response.status === 403) {
    throw new Error("Access refused: open the full URL printed by sst-desktop --serve (it includes the token).");
  }
  if (!payload) throw new Error(`Server error ${response.status} on ${name}`);
  if (!payload.ok) throw new Error(payload.error || `Server error on ${name}`);
  return payload.result;
}
