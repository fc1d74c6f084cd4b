// Stream positions: the client's cursors ({stream: {epoch, offset}}) and how each server
// message moves them. Shared by the client and by every tab of a shared client.

/** The cursors to send back: `all`, the `user:` streams and the subscribed topics. */
export function since(cursors, topics) {
  const out = {}
  for (const s in cursors) if (!s.startsWith('topic:') || topics.has(s.slice(6))) out[s] = cursors[s]
  return out
}

/**
 * Apply one server message to `cursors` and tell `emit(type, message)` what happened:
 * 'event' for a new event (duplicates are dropped), 'subscribed', 'resync' (also for a
 * `subscribed` whose outcome is resync), and any other message under its own type.
 */
export function dispatch(m, cursors, emit) {
  const { type, stream } = m
  const at = { epoch: m.epoch, offset: m.offset }
  const cur = cursors[stream]
  if (type === 'subscribed') {
    // A recovered stream replays from our cursor: keep it, so the replay is not dropped.
    if (m.outcome !== 'recovered' || cur?.epoch !== m.epoch) cursors[stream] = at
    emit(type, m)
    if (m.outcome === 'resync') emit('resync', m)
  } else if (type === 'resync') {
    cursors[stream] = at
    emit(type, m)
  } else if (stream != null && m.offset != null) {
    if (cur?.epoch === m.epoch && m.offset <= cur.offset) return
    cursors[stream] = at
    emit('event', m)
  } else {
    if (type === 'welcome') {
      for (const s in cursors) if (s.startsWith('user:') && s !== 'user:' + m.user) delete cursors[s]
    }
    emit(type, m)
  }
}
