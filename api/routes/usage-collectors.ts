import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { NotFoundError, ValidationError } from '../../billing/errors.js';
import { UsageCollector } from '../../db/entities.js';
import { newId, UUID_RE } from '../../db/ids.js';
import { checkCollectorQuery, ownDatabaseIdentity, SourceConnectError } from '../../db/usage-collector.js';
import { usageCollectorScheduleId } from '../../operations/workflow-ids.js';
import { createCollectorSchedule, deleteCollectorSchedule, triggerCollectorSchedule } from '../../operations/usage-collectors/collector-schedule.js';
import type { Client } from '../../operations/workflow-client.js';
import { allow } from '../auth.js';
import { objectAt, reqStr, timestamp, type Obj } from '../../operations/input/validate.js';

/**
 * Accrue endpoints for pull-based ingestion (the "usage collector"): a Temporal Schedule runs a
 * read-only SQL query against a team's own PostgreSQL every interval and ingests the rows.
 * The source connection string is stored but never returned.
 */
function collectorJson(c: UsageCollector) {
  return {
    id: c.id,
    name: c.name,
    query: c.query,
    event_type: c.eventType,
    interval_seconds: c.intervalSeconds,
    collected_until: c.collectedUntil.toISOString(),
    last_run_at: c.lastRunAt?.toISOString() ?? null,
    last_run_events: c.lastRunEvents ?? null,
    rows_outside_window: Number(c.rowsOutsideWindow),
    last_run_outside_window: c.lastRunOutsideWindow ?? null,
    schedule_id: usageCollectorScheduleId(c.id),
    archived_at: c.archivedAt?.toISOString() ?? null,
  };
}

function intervalSeconds(body: Obj): number {
  const v = body.interval_seconds;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > 31 * 86_400) {
    throw new ValidationError('interval_seconds', 'must be a whole number of seconds from 1 to 2678400 (31 days)');
  }
  return v;
}

async function findCollector(orm: MikroORM, id: string): Promise<UsageCollector> {
  const c = UUID_RE.test(id) ? await orm.em.fork().findOne(UsageCollector, { id: id.toLowerCase() }) : null;
  if (!c) throw new NotFoundError('usage collector', id, 'usage_collector_id');
  return c;
}

export function usageCollectorsRouter(orm: MikroORM, temporal: Client, taskQueue: string, opts: { ingestMaxAgeMs: number }): Router {
  const r = Router();

  r.post('/v1/accrue/usage-collectors', allow(), async (req, res) => {
    const body = objectAt(req.body, '', ['name', 'source_database_url', 'query', 'event_type', 'interval_seconds', 'starting_at']);
    const name = reqStr(body, 'name', '', 200);
    const sourceUrl = reqStr(body, 'source_database_url');
    const query = reqStr(body, 'query', '', 20_000).trim().replace(/;\s*$/, '');
    const eventType = reqStr(body, 'event_type', '', 256);
    const interval = intervalSeconds(body);
    const step = interval * 1000;
    const startingAt = timestamp(body, 'starting_at', '', { optional: true });
    if (startingAt && Date.parse(startingAt) % step !== 0) throw new ValidationError('starting_at', `must fall on a window boundary (a multiple of interval_seconds since 1970-01-01T00:00Z), got ${startingAt}`);
    // Its rows are held to the ingest window (db/usage-collector.ts): windows older than it would
    // only be skipped. A day of margin, so the first window is not already leaving it when collected.
    if (startingAt && Date.parse(startingAt) < Date.now() - opts.ingestMaxAgeMs + 86_400_000) {
      throw new ValidationError('starting_at', `is older than the ${Math.round(opts.ingestMaxAgeMs / 86_400_000)}-day ingest window: ${startingAt}`);
    }
    const own = await ownDatabaseIdentity(orm.em.fork());
    await checkCollectorQuery(sourceUrl, own, query).catch((err: unknown) => {
      if (err instanceof SourceConnectError) console.warn(`[api] usage collector ${JSON.stringify(name)}: source unreachable: ${err.reason}`);
      throw err;
    });
    const c: UsageCollector = {
      id: newId(), name, sourceUrl, query, eventType, intervalSeconds: interval,
      collectedUntil: new Date(startingAt ? Date.parse(startingAt) : Math.floor(Date.now() / step) * step),
      lastRunAt: null, lastRunEvents: null, rowsOutsideWindow: '0', lastRunOutsideWindow: null, createdAt: new Date(), archivedAt: null,
    };
    const em = orm.em.fork();
    em.create(UsageCollector, c);
    await em.flush();
    try {
      await createCollectorSchedule(temporal, taskQueue, c);
    } catch (err) {
      await orm.em.fork().nativeDelete(UsageCollector, { id: c.id });
      throw err;
    }
    res.json({ data: collectorJson(c) });
  });

  r.get('/v1/accrue/usage-collectors/:usage_collector_id', allow('read'), async (req, res) => {
    res.json({ data: collectorJson(await findCollector(orm, String(req.params.usage_collector_id))) });
  });

  // Runs the collector now (it still only collects whole windows that have ended).
  r.post('/v1/accrue/usage-collectors/:usage_collector_id/run', allow(), async (req, res) => {
    const c = await findCollector(orm, String(req.params.usage_collector_id));
    if (c.archivedAt) throw new ValidationError('usage_collector_id', 'refers to an archived usage collector');
    await triggerCollectorSchedule(temporal, c.id);
    res.status(202).json({ data: { id: c.id, triggered: true } });
  });

  r.post('/v1/accrue/usage-collectors/:usage_collector_id/archive', allow(), async (req, res) => {
    const c = await findCollector(orm, String(req.params.usage_collector_id));
    await deleteCollectorSchedule(temporal, c.id);
    await orm.em.fork().nativeUpdate(UsageCollector, { id: c.id }, { archivedAt: c.archivedAt ?? new Date() });
    res.json({ data: { id: c.id } });
  });

  return r;
}
