// Package delivery is the dispatcher's pure core and its HTTP client: how the
// request an endpoint receives is built and signed (CONTRACT 3.1), how an
// answer or an error is classified (success, retry, or dead at once), and how
// long to wait before the next attempt.
//
// The model: a delivery makes attempt n = attempts+1. [Classify] maps the
// result to one [Outcome]. A retryable outcome is retried while n is below
// len(retry_schedule)+1, after schedule[n-1] times a random factor in
// [0.9, 1.1], and never sooner than a Retry-After sent with 429 or 503;
// otherwise the delivery is dead ("exhausted"). Non-retryable statuses and
// refused destinations are dead at once.
package delivery
