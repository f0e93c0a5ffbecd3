// The Models page's upload form: sends the chosen directory through the management API's
// chunked upload (docs/models.md) with the console session. Each file's sha256 is computed
// here first; chunks follow in order; a chunk that fails is not guessed at: the page asks
// the upload how far the file got and continues there. The upload's id is kept in
// localStorage, so choosing the same directory again after a reload resumes it.
// SHA-256 is computed piece by piece with @noble/hashes (audited, no dependencies; from npm
// through the static pipeline) rather than with crypto.subtle, whose digest takes a whole
// file in memory at once (shards are gigabytes) and which plain-HTTP pages lack.
import { sha256 as sha256Hasher } from "../vendor/noble-hashes/sha2.js";
import { bytesToHex } from "../vendor/noble-hashes/utils.js";

// A module runs once per document, but the console swaps pages in with htmx: the form is
// wired on every page load that brings it, once per form element.
function wire() {
  const form = document.getElementById("model-upload");
  if (!form || form.dataset.wired) return;
  form.dataset.wired = "1";

  const READ_BYTES = 4 * 1024 * 1024;
  const RETRIES = 5;
  const chunkBytes = parseInt(form.dataset.chunkBytes, 10);
  const status = document.getElementById("mu-status");
  const progress = document.getElementById("mu-progress");
  const errors = document.getElementById("mu-errors");
  const button = document.getElementById("mu-send");
  const field = (id) => document.getElementById(id);
  const headers = { "X-CSRFToken": form.csrfmiddlewaretoken.value, "X-Organization": form.dataset.org };

  class Refused extends Error {
    constructor(message, problems) {
      super(message);
      this.problems = problems || [];
    }
  }

  const sha256 = async (file) => {
    const hash = sha256Hasher.create();
    for (let at = 0; at < file.size; at += READ_BYTES) {
      hash.update(new Uint8Array(await file.slice(at, at + READ_BYTES).arrayBuffer()));
    }
    return bytesToHex(hash.digest());
  };

  const api = async (method, path, body, contentType) => {
    const init = { method, headers: { ...headers }, credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = contentType || "application/json";
      init.body = contentType ? body : JSON.stringify(body);
    }
    const response = await fetch("/api/v1/" + path, init);
    const data = response.status === 204 ? {} : await response.json().catch(() => ({}));
    return { status: response.status, data };
  };

  // The management API's error, as it words it: the message and each problem it lists.
  const refused = (answer) => {
    const error = answer.data.error || {};
    const problems = Object.values(error.fields || {}).flat();
    return new Refused(error.message || "The server answered " + answer.status + ".", problems.length > 1 ? problems : []);
  };

  const show = (text) => { status.textContent = text; };
  const showError = (error) => {
    errors.replaceChildren();
    const message = document.createElement("p");
    message.textContent = error.message;
    errors.append(message);
    if (error.problems && error.problems.length) {
      const list = document.createElement("ol");
      for (const problem of error.problems) {
        const item = document.createElement("li");
        item.textContent = problem;
        list.append(item);
      }
      errors.append(list);
    }
  };

  // Files under the chosen directory, by their path inside it; dot-files are left out.
  const chosenFiles = () => {
    const files = [];
    for (const file of field("mu-directory").files) {
      const path = (file.webkitRelativePath || file.name).split("/").slice(file.webkitRelativePath ? 1 : 0).join("/");
      if (path && !path.split("/").some((part) => part.startsWith("."))) files.push({ path, file });
    }
    return files;
  };

  const storageKey = () => "switchboard.model-upload." + form.dataset.org + "." + field("mu-name").value;

  // An open upload of exactly these files under this name, if this browser started one.
  const resumable = async (declared) => {
    const saved = JSON.parse(localStorage.getItem(storageKey()) || "null");
    if (!saved || saved.declared !== JSON.stringify(declared)) return null;
    const answer = await api("GET", "models/uploads/" + saved.id + "/");
    return answer.status === 200 && answer.data.status === "open" ? answer.data : null;
  };

  // Sends one file from where the server has it; on any failure asks again how far it got.
  const sendFile = async (uploadId, entry, received, onProgress) => {
    let offset = received;
    let failures = 0;
    const url = "models/uploads/" + uploadId + "/files/" + entry.path.split("/").map(encodeURIComponent).join("/");
    while (offset < entry.file.size) {
      let answer;
      try {
        answer = await api("PUT", url + "?offset=" + offset, entry.file.slice(offset, offset + chunkBytes), "application/octet-stream");
      } catch (lost) {
        answer = { status: 0, data: {} };
      }
      if (answer.status === 200) {
        offset = answer.data.received;
        failures = 0;
        onProgress(offset);
        continue;
      }
      if (answer.status === 422 || (answer.status >= 400 && answer.status < 500 && answer.status !== 409 && answer.status !== 429)) {
        throw refused(answer);
      }
      failures += 1;
      if (failures > RETRIES) throw new Refused(entry.path + " did not go through after " + RETRIES + " tries; upload again to resume.");
      await new Promise((resolve) => setTimeout(resolve, 500 * failures));
      const now = await api("GET", "models/uploads/" + uploadId + "/").catch(() => null);
      const file = now && now.status === 200 ? now.data.files.find((item) => item.path === entry.path) : null;
      if (file) offset = file.received;
    }
  };

  const upload = async () => {
    const entries = chosenFiles();
    if (!field("mu-name").value) throw new Refused("Give the model a name.");
    if (!entries.length) throw new Refused("Choose a model directory.");
    const declared = [];
    for (const [index, entry] of entries.entries()) {
      show("Computing checksums: " + (index + 1) + " of " + entries.length + " (" + entry.path + ")");
      declared.push({ path: entry.path, size: entry.file.size, sha256: await sha256(entry.file) });
    }
    let started = await resumable(declared);
    if (!started) {
      const body = { name: field("mu-name").value, files: declared, license: field("mu-license").value, description: field("mu-description").value };
      if (field("mu-task").value) body.task = field("mu-task").value;  // none: config.json decides
      const answer = await api("POST", "models/uploads/", body);
      if (answer.status !== 201) throw refused(answer);
      started = answer.data;
      localStorage.setItem(storageKey(), JSON.stringify({ id: started.id, declared: JSON.stringify(declared) }));
    }
    const received = Object.fromEntries(started.files.map((file) => [file.path, file.received]));
    const total = declared.reduce((sum, file) => sum + file.size, 0) || 1;
    const done = {};
    const report = () => {
      const sent = Object.values(done).reduce((sum, bytes) => sum + bytes, 0);
      progress.value = sent / total;
      show("Uploading: " + sent + " of " + total + " bytes");
    };
    progress.hidden = false;
    for (const entry of entries) done[entry.path] = received[entry.path];
    report();
    for (const entry of entries) {
      await sendFile(started.id, entry, received[entry.path], (bytes) => { done[entry.path] = bytes; report(); });
    }
    show("Checking the model…");
    const completed = await api("POST", "models/uploads/" + started.id + "/complete/");
    if (completed.status === 422) localStorage.removeItem(storageKey());  // that upload failed; a new try starts afresh
    if (completed.status !== 201) throw refused(completed);
    localStorage.removeItem(storageKey());
    return completed.data;
  };

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    errors.replaceChildren();
    try {
      const model = await upload();
      show(model.name + " is registered.");
      window.location.reload();
    } catch (error) {
      show("Upload stopped.");
      showError(error instanceof Refused ? error : new Refused(String(error)));
    } finally {
      button.disabled = false;
    }
  });
}

wire();
document.addEventListener("htmx:load", wire);
