// A deployment's page: status and replicas pushed over its WebSocket (deployments.consumers).
// The page names its socket in [data-live-socket]. A classic script, so htmx's boosted
// navigation, which re-inserts it, runs it again for the new page.
(function () {
  "use strict";
  const root = document.querySelector("[data-live-socket]");
  if (!root) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${root.dataset.liveSocket}`);
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    const badge = document.getElementById("live-status");
    badge.textContent = data.status_label;
    badge.className = `badge badge--${data.status}`;
    document.getElementById("live-reason").textContent = data.status_reason;
    document.getElementById("live-replicas").innerHTML = data.replicas_html;
    const canary = document.getElementById("live-canary");
    if (canary && data.canary_html !== undefined) canary.innerHTML = data.canary_html;
  };
  socket.onclose = () => { const note = document.getElementById("live-note"); if (note) note.textContent = "Live updates stopped; reload the page."; };
  // Boosted navigation replaces the page without unloading it: close the socket with it.
  document.body.addEventListener("htmx:beforeSwap", () => socket.close(), { once: true });
})();
