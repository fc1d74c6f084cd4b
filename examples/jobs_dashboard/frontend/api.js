// The REST API, one function per endpoint. Errors carry the HTTP status (401: sign in).

export class HttpError extends Error {
  constructor(status, message) {
    super(message)
    this.status = status
  }
}

async function send(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  if (response.status === 204) return { response, data: null }
  const data = await response.json().catch(() => null)
  if (!response.ok) throw new HttpError(response.status, data?.error ?? response.statusText)
  return { response, data }
}

async function request(method, path, body) {
  return (await send(method, path, body)).data
}

/** A page of jobs, newest first: `{ jobs, total }`, `total` over every page of the filter. */
async function jobsPage({ filter, before, limit }) {
  const query = new URLSearchParams({ filter, limit })
  if (before != null) query.set('before', before)
  const { response, data } = await send('GET', `/api/jobs?${query}`)
  return { jobs: data, total: Number(response.headers.get('x-total-count')) }
}

export const api = {
  me: () => request('GET', '/api/me'),
  login: (user, password) => request('POST', '/api/login', { user, password }),
  logout: () => request('POST', '/api/logout'),
  jobs: jobsPage,
  job: (id) => request('GET', `/api/jobs/${id}`),
  history: (id) => request('GET', `/api/jobs/${id}/history`),
  stats: () => request('GET', '/api/stats'),
  connections: () => request('GET', '/api/admin/connections'),
  workers: () => request('GET', '/api/admin/workers'),
  create: (spec) => request('POST', '/api/jobs', spec),
  cancel: (id) => request('POST', `/api/jobs/${id}/cancel`),
  retry: (id) => request('POST', `/api/jobs/${id}/retry`),
}
