// A deployment's page: its status and live parts (replicas, event timeline, canary) pushed
// over its WebSocket (deployments.consumers, deployments.live). The page names its socket in
// [data-live-socket]. A classic script, so htmx's boosted navigation, which re-inserts it,
// runs it again for the new page.
(function () {
  "use strict";
  const root = document.querySelector("[data-live-socket]");
  if (!root) return;
  // Socket key -> the element its HTML fills. A part is replaced only when its HTML changed:
  // replacing an unchanged list would have screen readers read it out again.
  const parts = { replicas_html: "live-replicas", events_html: "live-events", canary_html: "live-canary" };
  const shown = {};
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}${root.dataset.liveSocket}`);
  socket.onmessage = (message) => {
    const data = JSON.parse(message.data);
    const badge = document.getElementById("live-status");
    badge.textContent = data.status_label;
    badge.className = `badge badge--${data.status}`;
    document.getElementById("live-reason").textContent = data.status_reason;
    for (const [key, id] of Object.entries(parts)) {
      const element = document.getElementById(id);
      if (!element || data[key] === undefined || shown[key] === data[key]) continue;
      element.innerHTML = data[key];
      shown[key] = data[key];
    }
  };
  socket.onclose = () => { const note = document.getElementById("live-note"); if (note) note.textContent = "Live updates stopped; reload the page."; };
  // Boosted navigation replaces the page without unloading it: close the socket with it.
  document.body.addEventListener("htmx:beforeSwap", () => socket.close(), { once: true });
})();
