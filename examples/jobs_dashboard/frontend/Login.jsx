// Sign in as one of the demo accounts (their passwords are on the page: this is a demo).
import { useQueryClient } from '@tanstack/react-query'
import { useState } from 'react'
import { api } from './api.js'

const ACCOUNTS = [
  ['alice', 'alice', 'a user'],
  ['bob', 'bob', 'another user'],
  ['admin', 'admin', 'sees every job and the live connections'],
]

export function Login() {
  const queryClient = useQueryClient()
  const [error, setError] = useState(null)
  const submit = async (e) => {
    e.preventDefault()
    const form = new FormData(e.currentTarget)
    try {
      await api.login(form.get('user'), form.get('password'))
    } catch (err) {
      return setError(err.message)
    }
    if (location.pathname === '/login') history.replaceState(null, '', '/')
    queryClient.resetQueries({ queryKey: ['me'] })
  }
  return (
    <main className="login">
      <h1>Jobs dashboard</h1>
      <form onSubmit={submit}>
        <label>
          User <input name="user" autoComplete="username" required autoFocus />
        </label>
        <label>
          Password <input name="password" type="password" autoComplete="current-password" required />
        </label>
        {error && <p className="error">{error}</p>}
        <button type="submit">Sign in</button>
      </form>
      <table className="accounts">
        <caption>Demo accounts</caption>
        <thead>
          <tr>
            <th>User</th>
            <th>Password</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {ACCOUNTS.map(([user, password, what]) => (
            <tr key={user}>
              <td>{user}</td>
              <td>
                <code>{password}</code>
              </td>
              <td>{what}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </main>
  )
}
