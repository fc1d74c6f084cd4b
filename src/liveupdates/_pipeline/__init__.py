"""The pipeline an event travels, in order (private: the public names live elsewhere).

    publisher   the publish side: an event encoded once, appended to its streams
    (backplane) positions, history, delivery to every process (liveupdates.backplanes)
    streams     the receiver: fan-out to the local connections of a stream, recovery, joins
    outbox      a connection's pending output: merging, collapse into resync
    flusher     the hub's one sending task (send engines in _send_*)
    connection  one client: its streams, cursors' gates, outbox and state
    (transport) the ASGI endpoints (liveupdates.asgi), through the session layer

Beside it: `control` (commands between hubs, carried as publications) and `sweeper`
(heartbeats, dead peers, slow consumers, token expiry).
"""
