// The upload page's script (s3svc/page.py serves it). No framework and no inline script: the
// page's Content-Security-Policy allows scripts and requests to its own origin only.
"use strict";

(() => {
  const root = document.getElementById("page");
  const uploadUrl = root.dataset.uploadUrl;
  const keysOn = root.dataset.apiKeys === "on";
  // WebCrypto digests whole buffers only: files up to this size are read into memory and hashed.
  const DIGEST_MAX_BYTES = 512 * 1024 * 1024;
  const PARALLEL = 3; // uploads at once, one request per file
  const canDigest = window.isSecureContext && !!(window.crypto && window.crypto.subtle);
  const keyInput = document.getElementById("api-key");
  const results = document.getElementById("results");
  const queue = [];
  let running = 0;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function human(bytes) {
    const units = ["KiB", "MiB", "GiB", "TiB"];
    if (bytes < 1024) return `${bytes} B`;
    let value = bytes;
    let unit = "B";
    for (const next of units) {
      if (value < 1024) break;
      value /= 1024;
      unit = next;
    }
    return `${value.toFixed(value < 10 ? 2 : 1)} ${unit}`;
  }

  function notice(kind, text) {
    const p = el("p", `notice ${kind}`, text);
    document.getElementById("notices").append(p);
    return p;
  }

  if (!canDigest) {
    notice(
      "no-digest",
      "This page is not a secure context (plain http:// from another host), so the browser " +
        "offers no WebCrypto: files are sent without a stated SHA-256 and are not verified end " +
        "to end. The service still answers each file's SHA-256; compare it yourself, or use https://.",
    ).id = "no-digest";
  }
  if (keysOn) {
    document.getElementById("key-row").hidden = false;
    if (!window.isSecureContext) {
      notice(
        "warning",
        "Warning: over plain http:// your API key travels in clear text. Use https:// to send it.",
      ).id = "clear-text-key";
    }
  }

  // One row of the list: the file's name and size, a progress bar, a status line, the result.
  function addItem(file) {
    const li = el("li", "item");
    li.dataset.state = "waiting";
    const head = el("div", "head");
    head.append(el("span", "name", file.name), el("span", "size", human(file.size)));
    const bar = el("progress", "bar");
    bar.max = 100;
    bar.value = 0;
    const status = el("p", "status", "waiting");
    li.append(head, bar, status);
    results.append(li);
    return { file, li, bar, status, sha256: null };
  }

  function setProgress(item, loaded, total) {
    const percent = total > 0 ? Math.floor((loaded * 100) / total) : 100;
    item.bar.value = Math.min(100, percent);
    item.bar.textContent = `${item.bar.value} %`;
    if (item.li.dataset.state === "sending") item.status.textContent = `sending: ${item.bar.value} %`;
  }

  function fail(item, text, status, code) {
    item.li.dataset.state = "failed";
    item.li.dataset.status = String(status);
    if (code) item.li.dataset.error = code;
    item.status.textContent = text;
  }

  // What a person should read for a failed upload: what happened, then the service's own words.
  function explain(status, body, retryAfter) {
    const code = body && body.error;
    const said = body && body.message ? ` The service said: ${body.message}.` : "";
    const retry = retryAfter ? ` Try again in ${retryAfter} s.` : " Try again later.";
    if (status === 0) {
      return "The connection closed before an answer arrived: the service may have refused the " +
        "upload before reading it (a wrong API key or a file too large), or the network failed. " +
        "Nothing was stored unless the service confirmed it.";
    }
    if (status === 401) {
      return `The API key was refused (401 ${code}): enter a valid key above, then choose the ` +
        `file again. Nothing was stored.${said}`;
    }
    if (status === 413) {
      return `Too large for this service (413 ${code}): nothing was stored.${said}`;
    }
    if (status === 415) {
      return `This kind of file is not accepted here (415 ${code}): nothing was stored.${said}`;
    }
    if (code === "digest_mismatch") {
      return "The bytes the service received differ from this file's SHA-256 computed here " +
        "(400 digest_mismatch): nothing was stored. Was the file changed while it was sent? " +
        `Try again.${said}`;
    }
    if (status === 408) return `The upload stalled or was too slow (408 ${code}).${said}`;
    if (status === 503) return `The service is busy or unavailable (503 ${code}).${retry}${said}`;
    if (status === 502) return `S3 refused the request (502 ${code}).${said}`;
    return `The upload failed (${status}${code ? ` ${code}` : ""}).${said}`;
  }

  function field(dl, name, value, className) {
    const dd = el("dd", className);
    if (typeof value === "string") dd.textContent = value;
    else dd.append(value);
    dl.append(el("dt", "", name), dd);
    return dd;
  }

  function stored(item, answer) {
    const f = answer.files[0];
    item.li.dataset.state = "stored";
    const verified = (f.verified || []).includes("sha-256");
    item.li.dataset.verified = verified ? "sha-256" : "";
    item.status.textContent = verified
      ? "stored: the service computed the same SHA-256 as this page (verified)"
      : "stored (not verified: no SHA-256 was stated for it)";
    const dl = el("dl", "result");
    field(dl, "key", f.key, "key");
    field(dl, "size", `${f.size} bytes (${human(f.size)})`, "stored-size");
    field(dl, "SHA-256", f.sha256, "sha256");
    field(dl, "verified", verified ? "sha-256" : "no", "verified");
    if (f.download_url) {
      const a = el("a", "download", "download");
      a.href = f.download_url;
      a.rel = "noopener noreferrer";
      const until = f.download_url_expires_at ? ` (until ${f.download_url_expires_at})` : "";
      const dd = field(dl, "link", a, "link");
      dd.append(until);
    }
    item.li.append(dl);
  }

  function parse(text) {
    try {
      return JSON.parse(text);
    } catch {
      return null;
    }
  }

  function send(item, key) {
    return new Promise((resolve) => {
      const form = new FormData();
      if (item.sha256) form.append("sha256", item.sha256); // right before its file
      form.append("file", item.file, item.file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", uploadUrl);
      if (key) xhr.setRequestHeader("X-Api-Key", key);
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) setProgress(item, e.loaded, e.total);
      });
      // The whole body has been sent.
      xhr.upload.addEventListener("load", () => setProgress(item, 1, 1));
      xhr.addEventListener("load", () =>
        resolve({
          status: xhr.status,
          body: parse(xhr.responseText),
          retryAfter: xhr.getResponseHeader("Retry-After"),
        }),
      );
      xhr.addEventListener("error", () => resolve({ status: 0, body: null }));
      xhr.addEventListener("abort", () => resolve({ status: 0, body: null }));
      xhr.send(form);
    });
  }

  function hex(buffer) {
    return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function upload(item, key) {
    const limit = Number(root.dataset.maxUploadBytes);
    const file = item.file;
    if (file.size > limit) {
      fail(
        item,
        `Not sent: ${human(file.size)} is over this service's limit of ${human(limit)} per ` +
          "file (MAX_UPLOAD_BYTES); the service would refuse it with 413 upload_too_large.",
        413,
        "upload_too_large",
      );
      return;
    }
    let note = "";
    if (!canDigest) {
      note = " (no SHA-256 stated: no WebCrypto over plain http://)";
    } else if (file.size > DIGEST_MAX_BYTES) {
      note = ` (no SHA-256 stated: files over ${human(DIGEST_MAX_BYTES)} are not hashed here)`;
    } else {
      item.li.dataset.state = "hashing";
      item.status.textContent = "computing SHA-256";
      try {
        item.sha256 = await hex(await window.crypto.subtle.digest("SHA-256", await file.arrayBuffer()));
      } catch (err) {
        fail(item, `Not sent: the file could not be read (${err.message}).`, 0, "unreadable");
        return;
      }
    }
    item.li.dataset.state = "sending";
    item.li.dataset.digest = item.sha256 ? "stated" : "none";
    item.status.textContent = `sending${note}`;
    const answer = await send(item, key);
    if ((answer.status === 200 || answer.status === 201) && answer.body && answer.body.files) {
      stored(item, answer.body);
      if (note) item.status.textContent += note;
    } else {
      fail(item, explain(answer.status, answer.body, answer.retryAfter), answer.status,
        answer.body && answer.body.error);
    }
  }

  function pump() {
    while (running < PARALLEL && queue.length > 0) {
      const [item, key] = queue.shift();
      running += 1;
      upload(item, key).finally(() => {
        running -= 1;
        pump();
      });
    }
  }

  // With API keys on, the key is checked before any file is sent: a service refuses a wrong key
  // before it reads the body, and a browser still sending a large file then often sees only a
  // reset connection. GET on the upload URL needs the key like the upload does: 401 when it is
  // wrong, else 405 (the upload takes POST only); it sends no file and stores nothing.
  async function keyRefused(key) {
    try {
      const response = await fetch(uploadUrl, { headers: key ? { "X-Api-Key": key } : {} });
      if (response.status !== 401) return null;
      return { status: 401, body: parse(await response.text()) };
    } catch {
      return null; // the uploads will say what went wrong
    }
  }

  async function take(files) {
    const items = files.map(addItem);
    const key = keysOn ? keyInput.value.trim() : "";
    const refused = keysOn ? await keyRefused(key) : null;
    for (const item of items) {
      if (refused) fail(item, explain(401, refused.body), 401, refused.body && refused.body.error);
      else queue.push([item, key]);
    }
    pump();
  }

  const input = document.getElementById("files");
  input.addEventListener("change", () => {
    take(Array.from(input.files));
    input.value = ""; // the same file may be chosen again
  });

  const drop = document.getElementById("drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (e) => {
      e.preventDefault();
      drop.classList.add("over");
    });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    take(Array.from(e.dataTransfer.files));
  });
  // A file dropped next to the zone must not replace the page.
  for (const type of ["dragover", "drop"]) {
    document.addEventListener(type, (e) => e.preventDefault());
  }
  root.dataset.ready = "true";
})();
