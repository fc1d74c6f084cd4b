// Full-jitter exponential backoff: a uniformly random delay in [0, min(cap, base * 2^attempt)).
// `attempt` counts from 0 for the first retry, so even the first retry is spread out.

export const fullJitter = (attempt, base, cap, random) =>
  random() * Math.min(cap, base * 2 ** attempt)
