/** Limits of what the API answers, shared by the routes and the tests that hold them to it. */

/** Duplicates of one event listed by the event search (a client retrying one id forever must not grow the answer). */
export const MAX_DUPLICATES_SHOWN = 10;
