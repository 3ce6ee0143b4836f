import type { ErrorRequestHandler, RequestHandler } from 'express';
import { AccrueError, UnavailableError, ValidationError } from '../billing/errors.js';
import { isDatabaseUnavailable } from '../db/pool.js';

/** The one place errors become HTTP responses: `{ message, code, field? }`, Metronome-style. */
export const errorHandler: ErrorRequestHandler = (err, req, res, _next) => {
  // PostgreSQL restarting or unreachable: the client retries later (the SDK retries 503s).
  if (!(err instanceof AccrueError) && isDatabaseUnavailable(err)) {
    res.setHeader('retry-after', '1');
    err = new UnavailableError('PostgreSQL is unavailable; retry later');
  }
  if (err instanceof AccrueError) {
    const body: Record<string, unknown> = { message: err.message, code: err.code };
    if (err instanceof ValidationError) {
      if (err.field) body.field = err.field;
      if (err.details !== undefined) body.details = err.details;
    }
    if ('field' in err && err.field && !body.field) body.field = err.field;
    res.status(err.status).json(body);
    return;
  }
  const e = err as { type?: string; status?: number; message?: string; limit?: number };
  if (e?.type === 'entity.parse.failed') {
    res.status(400).json({ message: `body: malformed JSON (${e.message})`, code: 'invalid_json', field: 'body' });
    return;
  }
  if (e?.type === 'entity.too.large') {
    res.status(413).json({ message: `body: larger than the ${e.limit} byte limit`, code: 'body_too_large', field: 'body' });
    return;
  }
  if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported') {
    res.status(415).json({ message: `body: ${e.message}`, code: 'unsupported_encoding', field: 'body' });
    return;
  }
  console.error(`[api] ${req.method} ${req.originalUrl} failed:`, err);
  res.status(500).json({ message: 'internal error', code: 'internal' });
};

export const notFound: RequestHandler = (req, res) => {
  res.status(404).json({ message: `no route for ${req.method} ${req.path}`, code: 'not_found' });
};
