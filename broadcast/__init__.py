"""Live updates: the channel-layer groups that the console's WebSocket consumers listen on,
publishing to them after a commit, and the consumers' wait for a change."""
