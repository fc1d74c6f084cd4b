// The environment hooks the client reads: a clock with timers, and the page's network,
// visibility and focus state. Both are injectable (tests, workers, other runtimes).

export const systemClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (id) => clearTimeout(id),
}

/** An option unless it is undefined (null turns a feature off), else the default. */
export const pick = (option, fallback) => (option === undefined ? fallback : option)

const EVENTS = ['online', 'offline', 'focus', 'visibilitychange']

/** The browser's state, read from `win` (a window). Missing APIs count as online and visible. */
export function browserEnv(win = globalThis) {
  const doc = win.document
  const nav = win.navigator
  return {
    online: () => nav?.onLine !== false,
    visible: () => doc?.visibilityState !== 'hidden',
    listen(fn) {
      const offs = EVENTS.map((type) => {
        const target = type === 'visibilitychange' ? doc : win
        if (!target?.addEventListener) return null
        const handler = () => fn(type)
        target.addEventListener(type, handler)
        return () => target.removeEventListener(type, handler)
      })
      return () => offs.forEach((off) => off?.())
    },
  }
}
