import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { ValidationError } from '../../billing/errors.js';
import { insertEvents, type NewEvent } from '../../db/events.js';
import { allow } from '../auth.js';
import { objectAt, reqStr, reqTimestamp } from '../validate.js';

const EVENT_FIELDS = ['transaction_id', 'customer_id', 'event_type', 'timestamp', 'properties'];
export const MAX_EVENTS_PER_REQUEST = 100;

/**
 * POST /v1/ingest — Metronome's shape: a JSON array of 1–100 events. Every event is validated
 * first; one bad event rejects the whole request (400 listing each bad event's index, field and
 * reason) and nothing is stored.
 *
 * Events for a customer id or alias Accrue does not know yet are stored as sent and matched when
 * read, so usage sent before its customer (or alias) exists is never lost.
 */
export function ingestRouter(orm: MikroORM): Router {
  const r = Router();
  r.post('/v1/ingest', allow('ingest'), async (req, res) => {
    const body: unknown = req.body;
    if (!Array.isArray(body)) throw new ValidationError('body', 'must be a JSON array of events');
    if (body.length === 0 || body.length > MAX_EVENTS_PER_REQUEST) {
      throw new ValidationError('body', `must hold 1 to ${MAX_EVENTS_PER_REQUEST} events, got ${body.length}`);
    }
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
        const properties = e.properties === undefined || e.properties === null ? {} : objectAt(e.properties, `${path}.properties`, Object.keys(e.properties as object));
        events.push({ transactionId, customerId, eventType, timestamp, properties });
      } catch (err) {
        if (!(err instanceof ValidationError)) throw err;
        errors.push({ index, field: err.field, message: err.message });
      }
    });
    if (errors.length) {
      throw new ValidationError(errors[0]!.field, `${errors.length} of ${body.length} events are invalid; nothing was stored. First: ${errors[0]!.message}`, errors);
    }
    await insertEvents(orm.em.fork(), events);
    res.status(200).json({});
  });
  return r;
}
