// The playground calls /v1/chat/completions with a short-lived token, streams the answer
// and shows who served it and what it is billed: tokens x the prices the gateway reports,
// in exact decimals, or, for a dedicated deployment, its GPU price per replica-hour (the
// request itself adds nothing; the invoice bills the replicas' GPU time).
(function () {
  const form = document.getElementById("playground");
  if (!form) return;
  const output = document.getElementById("pg-output");
  const show = (id, text) => { document.getElementById(id).textContent = text; };
  const SCALE = 15; // prices have at most nine decimals; per token (a millionth) that is fifteen

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

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const button = document.getElementById("pg-send");
    button.disabled = true;
    output.textContent = "";
    ["pg-target", "pg-region", "pg-tokens", "pg-cost"].forEach((id) => show(id, "…"));
    const body = {
      model: form.model.value,
      messages: [{ role: "user", content: form.prompt.value }],
      max_tokens: parseInt(form.max_tokens.value, 10) || 64,
      stream: true,
      stream_options: { include_usage: true },
    };
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + form.dataset.token },
        body: JSON.stringify(body),
      });
      show("pg-request", response.headers.get("x-request-id") || "-");
      if (!response.ok) {
        const problem = await response.json().catch(() => ({}));
        output.textContent = "Error " + response.status + ": " + ((problem.error && problem.error.message) || response.statusText);
        ["pg-target", "pg-region", "pg-tokens", "pg-cost"].forEach((id) => show(id, "-"));
        return;
      }
      show("pg-target", response.headers.get("x-switchboard-target") || "-");
      show("pg-region", response.headers.get("x-switchboard-region") || "-");
      const gpuPrice = response.headers.get("x-switchboard-billed-by") === "gpu-time" ? response.headers.get("x-switchboard-gpu-price-per-hour") : null;
      const inputPrice = response.headers.get("x-switchboard-input-price-per-mtok");
      const outputPrice = response.headers.get("x-switchboard-output-price-per-mtok");
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
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
          if (chunk.error) { output.textContent += "\n[" + chunk.error.message + "]"; continue; }
          for (const choice of chunk.choices || []) output.textContent += (choice.delta && choice.delta.content) || "";
          if (chunk.usage) {
            const usage = chunk.usage;
            show("pg-tokens", usage.prompt_tokens + " in, " + usage.completion_tokens + " out");
            show("pg-cost", gpuPrice !== null
              ? "Billed by GPU time: $" + gpuPrice + " per replica-hour"
              : "$" + charge(usage.prompt_tokens, usage.completion_tokens, inputPrice, outputPrice));
          }
        }
      }
    } catch (error) {
      output.textContent += "\n[" + error + "]";
    } finally {
      button.disabled = false;
    }
  });
})();
