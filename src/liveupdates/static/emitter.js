// A tiny event emitter. `on(type, fn)` returns the function that removes `fn` again.
// A listener that throws does not stop the others: its error goes to the page's
// `reportError` (as an uncaught error would), or is rethrown in a microtask.

export function createEmitter() {
  const map = new Map()
  return {
    on(type, fn) {
      const fns = map.get(type) || new Set()
      map.set(type, fns.add(fn))
      return () => void fns.delete(fn)
    },
    emit(type, ...args) {
      map.get(type)?.forEach((fn) => {
        try {
          fn(...args)
        } catch (err) {
          report(err)
        }
      })
    },
    clear: () => map.clear(),
  }
}

function report(err) {
  if (globalThis.reportError) globalThis.reportError(err)
  else
    queueMicrotask(() => {
      throw err
    })
}
