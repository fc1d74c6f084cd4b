// The dashboard's entry point: one QueryClient for the page, then the app.
import { QueryCache, QueryClient, QueryClientProvider } from '@tanstack/react-query'
import { createRoot } from 'react-dom/client'
import { App } from './App.jsx'

const queryClient = new QueryClient({
  // A 401 anywhere (the session expired, or signed out in another tab): ask who we are again,
  // which shows the sign-in form.
  queryCache: new QueryCache({
    onError: (error, query) => {
      if (error.status === 401 && query.queryKey[0] !== 'me') {
        queryClient.invalidateQueries({ queryKey: ['me'] })
      }
    },
  }),
  defaultOptions: {
    // The server says what changed, so data stays fresh without refetching on every focus.
    queries: { staleTime: 60_000, retry: (count, error) => error.status >= 500 && count < 2 },
  },
})

createRoot(document.getElementById('root')).render(
  <QueryClientProvider client={queryClient}>
    <App />
  </QueryClientProvider>,
)
