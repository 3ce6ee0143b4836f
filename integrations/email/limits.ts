/**
 * Time limits of one invoice email (invariant I4), in one place and free of nodemailer so the
 * workflow bundle can import them.
 *
 * nodemailer's own limits are set explicitly (its defaults are 2 min to connect, 30 s for the
 * greeting and 10 min of socket inactivity), so a send gives up within their sum,
 * `SMTP_SEND_LIMIT_MS`. The email activity's start-to-close timeout is longer than that: Temporal
 * never retries a send that may still be in flight. A send recorded as SENDING for longer than
 * the activity's timeout has ended one way or the other; only then is it sent again.
 */
export const SMTP_TIMEOUTS = { connectionTimeout: 5_000, greetingTimeout: 5_000, socketTimeout: 15_000 } as const;
export const SMTP_SEND_LIMIT_MS = SMTP_TIMEOUTS.connectionTimeout + SMTP_TIMEOUTS.greetingTimeout + SMTP_TIMEOUTS.socketTimeout;
/** The email activity's start-to-close timeout (and the age after which a SENDING row is resent). */
export const EMAIL_ACTIVITY_TIMEOUT_MS = SMTP_SEND_LIMIT_MS + 10_000;
