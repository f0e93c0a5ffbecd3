// The playground calls /v1/chat/completions with a short-lived token, streams the answer
// and shows who served it and what it cost (usage x the prices the gateway reports).
(function () {
  const form = document.getElementById("playground");
  if (!form) return;
  const output = document.getElementById("pg-output");
  const show = (id, text) => { document.getElementById(id).textContent = text; };

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
      const inputPrice = parseFloat(response.headers.get("x-switchboard-input-price-per-mtok") || "0");
      const outputPrice = parseFloat(response.headers.get("x-switchboard-output-price-per-mtok") || "0");
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
            const cost = (usage.prompt_tokens * inputPrice + usage.completion_tokens * outputPrice) / 1e6;
            show("pg-cost", "$" + cost.toFixed(8));
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
