// The REST API, one function per endpoint. Errors carry the HTTP status (401: sign in).

export class HttpError extends Error {
  constructor(status, message) {
    super(message)
    this.status = status
  }
}

async function request(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  if (response.status === 204) return null
  const data = await response.json().catch(() => null)
  if (!response.ok) throw new HttpError(response.status, data?.error ?? response.statusText)
  return data
}

export const api = {
  me: () => request('GET', '/api/me'),
  login: (user, password) => request('POST', '/api/login', { user, password }),
  logout: () => request('POST', '/api/logout'),
  jobs: () => request('GET', '/api/jobs'),
  job: (id) => request('GET', `/api/jobs/${id}`),
  history: (id) => request('GET', `/api/jobs/${id}/history`),
  stats: () => request('GET', '/api/stats'),
  connections: () => request('GET', '/api/admin/connections'),
  create: (spec) => request('POST', '/api/jobs', spec),
  cancel: (id) => request('POST', `/api/jobs/${id}/cancel`),
  retry: (id) => request('POST', `/api/jobs/${id}/retry`),
}
