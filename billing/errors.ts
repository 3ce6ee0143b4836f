/**
 * Accrue's typed errors. api/ maps them to HTTP statuses once (api/errors.ts); activities map
 * them to retryable / non-retryable Temporal failures (activities/failures.ts).
 */
export abstract class AccrueError extends Error {
  abstract readonly status: number;
  abstract readonly code: string;
  /** Whether retrying the same call can succeed (transient), as opposed to bad input or state. */
  readonly retryable: boolean = false;
}

/** Bad input; `field` is the path of the offending field, e.g. `usage[2].timestamp`. */
export class ValidationError extends AccrueError {
  readonly status = 400;
  readonly code = 'invalid_request';
  constructor(readonly field: string | undefined, reason: string, readonly details?: unknown) {
    super(field ? `${field}: ${reason}` : reason);
  }
}

export class NotFoundError extends AccrueError {
  readonly status = 404;
  readonly code = 'not_found';
  constructor(readonly resource: string, readonly id: string, readonly field?: string) {
    super(`${resource} ${id} not found`);
  }
}

export class ConflictError extends AccrueError {
  readonly status = 409;
  readonly code = 'conflict';
}

/** A request body in a form Accrue does not read (e.g. JSON in a charset other than UTF-8); `field` names the header. */
export class UnsupportedMediaTypeError extends AccrueError {
  readonly status = 415;
  readonly code = 'unsupported_media_type';
  constructor(readonly field: string, reason: string) {
    super(`${field}: ${reason}`);
  }
}

export class UnauthorizedError extends AccrueError {
  readonly status = 401;
  readonly code = 'unauthorized';
}

export class ForbiddenError extends AccrueError {
  readonly status = 403;
  readonly code = 'forbidden';
}

/** A dependency (Temporal, SMTP, …) is unavailable; safe to retry. */
export class UnavailableError extends AccrueError {
  readonly status = 503;
  readonly code = 'unavailable';
  override readonly retryable = true;
}
