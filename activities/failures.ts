import { ApplicationFailure } from '@temporalio/activity';
import { AccrueError } from '../billing/errors.js';

/**
 * The activity boundary: Accrue's typed errors become non-retryable failures unless they say they
 * are transient; anything else (a dropped connection, a timeout) is left retryable.
 */
export async function classified<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof AccrueError && !err.retryable) {
      throw ApplicationFailure.nonRetryable(err.message, err.constructor.name);
    }
    throw err;
  }
}
