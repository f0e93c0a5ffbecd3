// A deployment's page: its status and live parts (start-up stage, replicas, event timeline,
// canary) pushed over its WebSocket (deployments.consumers, deployments.live). The page names
// its socket in [data-live-socket]. A classic script, so htmx's boosted navigation, which
// re-inserts it, runs it again for the new page.
(function () {
  "use strict";
  const root = document.querySelector("[data-live-socket]");
  if (!root) return;
  // Socket key -> the element its HTML fills. A part is replaced only when its HTML changed:
  // replacing an unchanged list would have screen readers read it out again.
  const parts = { startup_html: "live-startup", replicas_html: "live-replicas", events_html: "live-events", canary_html: "live-canary" };
  const shown = {};

  // A start under way: its seconds tick here between pushes, counted from what the server
  // said when it rendered the part (no reliance on this machine's clock being right).
  let ticker = null;
  const followTicker = () => {
    const element = document.querySelector("[data-startup-elapsed]");
    ticker = element ? { element, base: Number(element.dataset.startupElapsed), from: performance.now() } : null;
  };
  const tick = () => {
    if (!ticker || !ticker.element.isConnected) return;
    const text = `${ticker.base + Math.floor((performance.now() - ticker.from) / 1000)} s`;
    if (ticker.element.textContent !== text) ticker.element.textContent = text;
  };
  const interval = setInterval(tick, 250);  // a second's change shows within a quarter of one
  followTicker();

  // A new stage is said once, politely, through a live region outside the replaced part.
  const stageText = () => { const stage = document.querySelector("[data-startup-said]"); return stage ? stage.dataset.startupSaid : ""; };
  let said = stageText();

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
      if (key === "startup_html") followTicker();
    }
    const now = stageText();
    const region = document.getElementById("live-startup-said");
    if (region && now && now !== said) region.textContent = now;
    said = now;
  };
  const stop = () => { clearInterval(interval); ticker = null; };
  socket.onclose = () => {
    stop();  // a stale count would mislead: the start may have ended unseen
    const note = document.getElementById("live-note");
    if (note) note.textContent = "Live updates stopped; reload the page.";
  };
  // Boosted navigation replaces the page without unloading it: close the socket with it.
  document.body.addEventListener("htmx:beforeSwap", () => { stop(); socket.close(); }, { once: true });
})();
