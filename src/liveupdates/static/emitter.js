// A tiny event emitter. `on(type, fn)` returns the function that removes `fn` again.
// A listener that throws does not stop the others: its error is rethrown on its own.

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
          queueMicrotask(() => {
            throw err
          })
        }
      })
    },
    clear: () => map.clear(),
  }
}
