import { Router } from 'express';
import type pg from 'pg';
import { ValidationError } from '../../billing/errors.js';
import { aggregationProblem, keySizeProblem, matchesMetric } from '../../billing/metering/match.js';
import { insertEvents, type NewEvent } from '../../db/events.js';
import { allow } from '../auth.js';
import type { MetricsCache } from '../metrics-cache.js';
import { objectAt, reqStr, reqTimestamp } from '../../operations/input/validate.js';

const EVENT_FIELDS = ['transaction_id', 'customer_id', 'event_type', 'timestamp', 'properties'];
const MAX_EVENTS_PER_REQUEST = 100;
const FUTURE_LIMIT_MS = 24 * 3_600_000;

interface IngestOptions {
  /** Oldest accepted event timestamp, as an age (default 34 days, as Metronome). */
  maxAgeMs: number;
}

/**
 * POST /v1/ingest — Metronome's shape: a JSON array (optionally gzip-encoded) of 1–100 events.
 * Every event is validated first; one bad event rejects the whole request (400 listing each bad
 * event's index, field and reason) and nothing is stored. A 200 means the events are committed.
 *
 * - transaction_id is idempotent: a duplicate in the same batch, a later batch or a concurrent
 *   request is accepted and never counted twice (the stored event wins; duplicates are logged
 *   for /v1/events/search).
 * - timestamp: at most `maxAgeMs` old and at most 24 h in the future.
 * - An event that a SUM, MAX or LATEST metric would aggregate must carry a number there.
 * - Events for a customer id or alias Accrue does not know yet are stored as sent and rated
 *   once that customer or alias exists: usage sent early is never lost.
 */
export function ingestRouter(pool: pg.Pool, metrics: MetricsCache, opts: IngestOptions): Router {
  const r = Router();
  r.post('/v1/ingest', allow('ingest'), async (req, res) => {
    const body: unknown = req.body;
    if (!Array.isArray(body)) throw new ValidationError('body', 'must be a JSON array of events');
    if (body.length === 0 || body.length > MAX_EVENTS_PER_REQUEST) {
      throw new ValidationError('body', `must hold 1 to ${MAX_EVENTS_PER_REQUEST} events, got ${body.length}`);
    }
    const now = Date.now();
    const active = await metrics.get();
    const events: NewEvent[] = [];
    const errors: { index: number; field?: string; message: string }[] = [];
    body.forEach((raw, index) => {
      const path = `[${index}]`;
      try {
        const e = objectAt(raw, path, EVENT_FIELDS);
        const transactionId = reqStr(e, 'transaction_id', path, 128);
        const customerId = reqStr(e, 'customer_id', path, 256);
        const eventType = reqStr(e, 'event_type', path, 256);
        const timestamp = reqTimestamp(e, 'timestamp', path);
        const at = Date.parse(timestamp);
        if (at > now + FUTURE_LIMIT_MS) throw new ValidationError(`${path}.timestamp`, `is more than 24 hours in the future: ${timestamp}`);
        if (at < now - opts.maxAgeMs) {
          throw new ValidationError(`${path}.timestamp`, `is older than the ${Math.round(opts.maxAgeMs / 86_400_000)}-day ingest window: ${timestamp}`);
        }
        const properties = e.properties === undefined || e.properties === null ? {} : objectAt(e.properties, `${path}.properties`, Object.keys(e.properties as object));
        for (const m of active) {
          if (!matchesMetric(m, { eventType, properties })) continue;
          const problem = aggregationProblem(m, { eventType, properties });
          if (problem) throw new ValidationError(`${path}.properties.${m.aggregationKey}`, `${problem} (billable metric ${m.name}, ${m.id})`);
          const size = keySizeProblem(m, { eventType, properties });
          if (size) throw new ValidationError(`${path}.properties.${size.property}`, `${size.message} (billable metric ${m.name}, ${m.id})`);
        }
        events.push({ transactionId, customerId, eventType, timestamp, properties });
      } catch (err) {
        if (!(err instanceof ValidationError)) throw err;
        errors.push({ index, field: err.field, message: err.message });
      }
    });
    if (errors.length) {
      throw new ValidationError(errors[0]!.field, `${errors.length} of ${body.length} events are invalid; nothing was stored. First: ${errors[0]!.message}`, errors);
    }
    await insertEvents(pool, events);
    res.status(200).json({});
  });
  return r;
}
