// The playground calls /v1/chat/completions with a short-lived token, streams the answer
// and shows who served it and what it is billed: tokens x the prices the gateway reports,
// in exact decimals, or, for a dedicated deployment, its GPU price per replica-hour (the
// request itself adds nothing; the invoice bills the replicas' GPU time).
//
// A conversation: every request carries the system prompt (if any) and the turns so far.
// "Compare with" sends the same conversation to a second route or deployment, in its own
// column. "View code" shows the next request as curl and as Python (openai SDK). Text from
// the user or the gateway only ever goes into the page as textContent.
(function () {
  "use strict";
  const form = document.getElementById("playground");
  if (!form) return;
  const SCALE = 15; // prices have at most nine decimals; per token (a millionth) that is fifteen
  const coldStartSeconds = form.dataset.coldStartS || "120";
  const sendButton = document.getElementById("pg-send");
  const newButton = document.getElementById("pg-new");
  const codeToggle = document.getElementById("pg-code-toggle");
  const codeSection = document.getElementById("pg-code");
  const codeBody = document.getElementById("pg-code-body");

  // "0.000123" -> 123000000n at SCALE decimals: exact, as money must be.
  const toUnits = (text) => {
    const [whole, fraction = ""] = (text || "0").split(".");
    return BigInt(whole + fraction.padEnd(SCALE, "0").slice(0, SCALE));
  };
  const plain = (units) => {
    const digits = units.toString().padStart(SCALE + 1, "0");
    const fraction = digits.slice(-SCALE).replace(/0+$/, "");
    return digits.slice(0, -SCALE) + (fraction ? "." + fraction : "");
  };
  // Tokens x price per million, exact: the per-million division is six places of SCALE.
  const charge = (promptTokens, completionTokens, inputPrice, outputPrice) =>
    plain((BigInt(promptTokens) * toUnits(inputPrice) + BigInt(completionTokens) * toUnits(outputPrice)) / 1000000n);

  const element = (tag, className, text) => {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const seconds = (ms) => (ms / 1000).toFixed(2) + " s";

  // The conversation: each turn is the user's message and each column's answer (a column
  // that joined later, or whose answer failed, continues from the first column's).
  let turns = [];
  const answerOf = (turn, index) => (turn.answers[index] != null ? turn.answers[index] : turn.answers[0]);

  const columns = [0, 1].map((index) => {
    const root = document.getElementById("pg-col-" + index);
    const find = (selector) => root.querySelector(selector);
    return {
      index,
      root,
      title: find(".pg-col-model"),
      transcript: find(".pg-transcript"),
      status: find(".pg-status"),
      statusText: find(".pg-status-text"),
      elapsed: find(".pg-elapsed"),
      spinner: find(".pg-spinner"),
      alert: find(".pg-alert"),
      fact: (name, text) => { const node = find(".pg-" + name); (node.querySelector("code") || node).textContent = text; },
    };
  });

  const parameters = () => {
    const chosen = {};
    if (form.max_tokens.value !== "") chosen.max_tokens = parseInt(form.max_tokens.value, 10);
    if (form.temperature.value !== "") chosen.temperature = parseFloat(form.temperature.value);
    if (form.top_p.value !== "") chosen.top_p = parseFloat(form.top_p.value);
    return chosen;
  };
  const messagesFor = (index, prompt) => {
    const messages = [];
    if (form.system.value.trim()) messages.push({ role: "system", content: form.system.value });
    for (const turn of turns) {
      messages.push({ role: "user", content: turn.user });
      messages.push({ role: "assistant", content: answerOf(turn, index) });
    }
    messages.push({ role: "user", content: prompt });
    return messages;
  };
  const requestBody = (model, messages) =>
    Object.assign({ model, messages }, parameters(), { stream: true, stream_options: { include_usage: true } });
  // The requests Send would make now: the first column's, and the compared one's.
  const plannedRequests = (prompt) => {
    const planned = [{ column: columns[0], model: form.model.value }];
    if (form.compare.value) planned.push({ column: columns[1], model: form.compare.value });
    return planned.map((p) => Object.assign(p, { body: requestBody(p.model, messagesFor(p.column.index, prompt)) }));
  };
  const isCold = (select) => {
    const option = select.selectedOptions[0];
    return Boolean(option && option.dataset.cold);
  };

  // --- The transcript -------------------------------------------------------------------
  const renderTranscript = (column, pendingUser, model) => {
    column.transcript.replaceChildren();
    const add = (role, label, text) => {
      const item = element("li", "pg-turn pg-turn--" + role);
      item.append(element("span", "pg-role", label), element("pre", "", text));
      column.transcript.append(item);
      return item.querySelector("pre");
    };
    for (const turn of turns) {
      add("user", "You", turn.user);
      add("assistant", "Assistant", answerOf(turn, column.index));
    }
    if (pendingUser === undefined) return null;
    add("user", "You", pendingUser);
    const answer = add("assistant", model, "");
    answer.dataset.testid = "playground-output";
    return answer;
  };

  // --- Status, errors and facts ---------------------------------------------------------
  const resetColumn = (column, model) => {
    column.title.textContent = model ? " from " + model : "";
    column.alert.replaceChildren();
    ["target", "region", "tokens", "cost", "ttft", "total", "request"].forEach((name) => column.fact(name, "-"));
  };
  const startClock = (column, waitingText) => {
    const started = performance.now();
    column.status.hidden = false;
    column.spinner.hidden = false;
    column.statusText.textContent = waitingText;
    const tick = () => { column.elapsed.textContent = Math.floor((performance.now() - started) / 1000) + " s"; };
    tick();
    const timer = setInterval(tick, 250);
    return {
      started,
      say: (text) => { if (column.statusText.textContent !== text) column.statusText.textContent = text; },
      stop: (text) => {
        clearInterval(timer);
        column.spinner.hidden = true;
        column.elapsed.textContent = "";
        column.statusText.textContent = text;
      },
    };
  };
  const showError = (column, problem) => {
    column.alert.replaceChildren();
    column.alert.append(element("strong", "", problem.title));
    if (problem.message) column.alert.append(element("p", "", problem.message));
    const details = element("dl", "pg-alert-details");
    const detail = (term, value) => { if (value) details.append(element("dt", "", term), element("dd", "", value)); };
    detail("Code", problem.code);
    detail("Request id", problem.requestId);
    if (details.childElementCount) column.alert.append(details);
  };

  // --- One streamed call into one column; the answer, or null when it failed -------------
  const call = async (column, model, body, cold) => {
    resetColumn(column, model);
    const answer = renderTranscript(column, body.messages[body.messages.length - 1].content, model);
    const waiting = cold
      ? "Starting a replica: " + model + " is scaled to zero; that takes up to " + coldStartSeconds + " s…"
      : "Waiting for the first token…";
    const clock = startClock(column, waiting);
    const slowHint = cold ? null : setTimeout(() => {
      clock.say("Still waiting for the first token (a deployment scaled to zero takes up to " + coldStartSeconds + " s to start)…");
    }, 5000);
    let firstToken = null;
    let requestId = "";
    const finish = (ok) => {
      clearTimeout(slowHint);
      const total = performance.now() - clock.started;
      column.fact("total", seconds(total));
      if (firstToken !== null) column.fact("ttft", seconds(firstToken - clock.started));
      clock.stop(ok
        ? "Done: first token after " + (firstToken !== null ? seconds(firstToken - clock.started) : "-") + ", " + seconds(total) + " in all."
        : "Failed after " + seconds(total) + ".");
    };
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + form.dataset.token },
        body: JSON.stringify(body),
      });
      requestId = response.headers.get("x-request-id") || "";
      column.fact("request", requestId || "-");
      if (!response.ok) {
        const text = await response.text();
        let error = {};
        try { error = JSON.parse(text).error || {}; } catch (_) { error = { message: text.slice(0, 500) }; }
        showError(column, {
          title: "The gateway answered " + response.status + (response.statusText ? " " + response.statusText : ""),
          message: error.message || "",
          code: error.code || error.type || "",
          requestId,
        });
        finish(false);
        return null;
      }
      clock.say("Connected, waiting for the first token…");
      column.fact("target", response.headers.get("x-switchboard-target") || "-");
      column.fact("region", response.headers.get("x-switchboard-region") || "-");
      const gpuPrice = response.headers.get("x-switchboard-billed-by") === "gpu-time" ? response.headers.get("x-switchboard-gpu-price-per-hour") : null;
      const inputPrice = response.headers.get("x-switchboard-input-price-per-mtok");
      const outputPrice = response.headers.get("x-switchboard-output-price-per-mtok");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      let failed = false;
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const line = buffer.slice(0, cut).trim();
          buffer = buffer.slice(cut + 2);
          if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
          const chunk = JSON.parse(line.slice(6));
          if (chunk.error) {
            failed = true;
            showError(column, {
              title: "The stream failed after it started",
              message: chunk.error.message || "",
              code: chunk.error.code || chunk.error.type || "",
              requestId,
            });
            continue;
          }
          for (const choice of chunk.choices || []) {
            const text = (choice.delta && choice.delta.content) || "";
            if (text && firstToken === null) {
              firstToken = performance.now();
              column.fact("ttft", seconds(firstToken - clock.started));
              clock.say("Streaming…");
            }
            answer.textContent += text;
          }
          if (chunk.usage) {
            const usage = chunk.usage;
            column.fact("tokens", usage.prompt_tokens + " in, " + usage.completion_tokens + " out");
            column.fact("cost", gpuPrice !== null
              ? "Billed by GPU time: $" + gpuPrice + " per replica-hour"
              : "$" + charge(usage.prompt_tokens, usage.completion_tokens, inputPrice, outputPrice));
          }
        }
      }
      finish(!failed);
      return failed ? null : answer.textContent;
    } catch (error) {
      showError(column, { title: "The request did not complete", message: String(error), code: "", requestId });
      finish(false);
      return null;
    }
  };

  // --- View code ------------------------------------------------------------------------
  const pythonValue = (value, indent) => {
    const pad = " ".repeat(indent);
    if (value === true) return "True";
    if (value === false) return "False";
    if (value === null) return "None";
    if (typeof value === "string" || typeof value === "number") return JSON.stringify(value); // a JSON string is a Python literal
    if (Array.isArray(value)) {
      if (!value.length) return "[]";
      return "[\n" + value.map((item) => pad + "    " + pythonValue(item, indent + 4) + ",\n").join("") + pad + "]";
    }
    return "{" + Object.entries(value).map(([key, item]) => JSON.stringify(key) + ": " + pythonValue(item, indent)).join(", ") + "}";
  };
  const baseUrl = () => window.location.origin + "/v1";
  const curlCode = (body) =>
    "curl -N " + baseUrl() + "/chat/completions \\\n" +
    "  -H \"Authorization: Bearer $SWITCHBOARD_API_KEY\" \\\n" +
    "  -H \"Content-Type: application/json\" \\\n" +
    "  -d '" + JSON.stringify(body, null, 2).replace(/'/g, "'\\''") + "'";
  const pythonCode = (body) => {
    const args = Object.entries(body).map(([key, value]) => "    " + key + "=" + pythonValue(value, 4) + ",\n").join("");
    return "import os\n\nfrom openai import OpenAI\n\n" +
      "client = OpenAI(base_url=" + JSON.stringify(baseUrl()) + ", api_key=os.environ[\"SWITCHBOARD_API_KEY\"])\n\n" +
      "stream = client.chat.completions.create(\n" + args + ")\n" +
      "for chunk in stream:\n" +
      "    if chunk.choices:\n" +
      "        print(chunk.choices[0].delta.content or \"\", end=\"\", flush=True)\n" +
      "    if chunk.usage:\n" +
      "        print(\"\\n\", chunk.usage)\n";
  };
  const renderCode = () => {
    if (codeSection.hidden) return;
    codeBody.replaceChildren();
    for (const planned of plannedRequests(form.prompt.value)) {
      const block = element("div", "pg-code-block");
      block.append(element("h3", "", "Request to " + planned.model));
      block.append(element("h4", "", "curl"), element("pre", "snippet pg-code-curl", curlCode(planned.body)));
      block.append(element("h4", "", "Python (openai)"), element("pre", "snippet pg-code-python", pythonCode(planned.body)));
      codeBody.append(block);
    }
  };
  codeToggle.addEventListener("click", () => {
    const open = codeToggle.getAttribute("aria-expanded") !== "true";
    codeToggle.setAttribute("aria-expanded", String(open));
    codeToggle.textContent = open ? "Hide code" : "View code";
    codeSection.hidden = !open;
    renderCode();
  });
  form.addEventListener("input", renderCode);
  form.addEventListener("change", renderCode);

  // --- Sending and starting over --------------------------------------------------------
  const showCompare = () => {
    columns[1].root.hidden = !form.compare.value;
    if (form.compare.value) renderTranscript(columns[1]);
  };
  form.compare.addEventListener("change", showCompare);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const prompt = form.prompt.value;
    if (!prompt.trim() || sendButton.disabled) return;
    showCompare();
    sendButton.disabled = true;
    newButton.disabled = true;
    const planned = plannedRequests(prompt);
    const colds = [form.model, form.compare].map(isCold);
    form.prompt.value = "";
    const answers = await Promise.all(planned.map((p) => call(p.column, p.model, p.body, colds[p.column.index])));
    if (answers[0] !== null) {
      turns.push({ user: prompt, answers });
    } else if (!form.prompt.value) {
      form.prompt.value = prompt; // the first column failed: the turn is not kept, the message is back to retry
    }
    sendButton.disabled = false;
    newButton.disabled = false;
    renderCode();
    form.prompt.focus();
  });
  form.prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  newButton.addEventListener("click", () => {
    turns = [];
    for (const column of columns) {
      resetColumn(column, "");
      renderTranscript(column);
      column.status.hidden = true;
    }
    renderCode();
    form.prompt.focus();
  });
})();
