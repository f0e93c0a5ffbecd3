// The Models page's upload form: sends the chosen directory through the management API's
// chunked upload (docs/models.md) with the console session. Each file's sha256 is computed
// here first; chunks follow in order; a chunk that fails is not guessed at: the page asks
// the upload how far the file got and continues there. The upload's id is kept in
// localStorage, so choosing the same directory again after a reload resumes it.
// SHA-256 is computed in JavaScript rather than with crypto.subtle, whose digest takes a
// whole file in memory at once (shards are gigabytes) and which plain-HTTP pages lack.
(function () {
  "use strict";
  const form = document.getElementById("model-upload");
  if (!form) return;

  const K = Uint32Array.of(
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
  );

  // SHA-256 (FIPS 180-4), fed piece by piece.
  class Sha256 {
    constructor() {
      this.state = Uint32Array.of(0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19);
      this.block = new Uint8Array(64);
      this.filled = 0;
      this.bytes = 0;
      this.w = new Uint32Array(64);
    }

    update(data) {
      this.bytes += data.length;
      let at = 0;
      if (this.filled) {
        at = Math.min(64 - this.filled, data.length);
        this.block.set(data.subarray(0, at), this.filled);
        this.filled += at;
        if (this.filled < 64) return;
        this.compress(this.block, 0);
        this.filled = 0;
      }
      for (; at + 64 <= data.length; at += 64) this.compress(data, at);
      this.block.set(data.subarray(at));
      this.filled = data.length - at;
    }

    compress(data, at) {
      const w = this.w;
      const s = this.state;
      for (let t = 0; t < 16; t++) {
        const j = at + t * 4;
        w[t] = (data[j] << 24) | (data[j + 1] << 16) | (data[j + 2] << 8) | data[j + 3];
      }
      for (let t = 16; t < 64; t++) {
        const x = w[t - 15];
        const y = w[t - 2];
        const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
        const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
        w[t] = (w[t - 16] + s0 + w[t - 7] + s1) | 0;
      }
      let a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
      for (let t = 0; t < 64; t++) {
        const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
        const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[t] + w[t]) | 0;
        const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
        const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
        h = g; g = f; f = e; e = (d + t1) | 0; d = c; c = b; b = a; a = (t1 + t2) | 0;
      }
      s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
    }

    hex() {
      const bits = this.bytes * 8;
      const tail = new Uint8Array(this.filled < 56 ? 64 : 128);
      tail.set(this.block.subarray(0, this.filled));
      tail[this.filled] = 0x80;
      const view = new DataView(tail.buffer);
      view.setUint32(tail.length - 8, Math.floor(bits / 0x100000000));
      view.setUint32(tail.length - 4, bits >>> 0);
      for (let at = 0; at < tail.length; at += 64) this.compress(tail, at);
      return Array.from(this.state, (word) => word.toString(16).padStart(8, "0")).join("");
    }
  }

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
    const hash = new Sha256();
    for (let at = 0; at < file.size; at += READ_BYTES) {
      hash.update(new Uint8Array(await file.slice(at, at + READ_BYTES).arrayBuffer()));
    }
    return hash.hex();
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
})();
