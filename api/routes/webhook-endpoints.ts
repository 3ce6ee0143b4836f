import { Router } from 'express';
import type { MikroORM } from '@mikro-orm/postgresql';
import { ValidationError } from '../../billing/errors.js';
import { UUID_RE } from '../../db/ids.js';
import { NOTIFICATION_TYPES } from '../../db/notifications.js';
import { archiveWebhookEndpoint, createWebhookEndpoint, listDeliveries, listWebhookEndpoints } from '../../db/webhooks.js';
import { checkWebhookUrl } from '../../integrations/webhooks/address-policy.js';
import { allow } from '../auth.js';
import { objectAt, oneOf, reqStr, stringArray } from '../../operations/input/validate.js';

/**
 * Outbound webhook endpoints (Accrue's API; the payloads and signatures are Metronome's, so the
 * official SDK's `webhooks.unwrap` verifies them). The secret is shown once, at creation.
 */
function endpointId(raw: unknown): string {
  const id = String(raw).toLowerCase();
  if (!UUID_RE.test(id)) throw new ValidationError('id', 'must be a webhook endpoint id (UUID)');
  return id;
}

export function webhookEndpointsRouter(orm: MikroORM, opts: { allowPrivate: boolean }): Router {
  const r = Router();

  r.post('/v1/accrue/webhook-endpoints', allow(), async (req, res) => {
    const body = objectAt(req.body ?? {}, '', ['url', 'event_types']);
    const url = await checkWebhookUrl(reqStr(body, 'url', '', 2000), 'url', opts.allowPrivate);
    const types = stringArray(body, 'event_types', '', { optional: true, nonEmpty: true }) ?? null;
    types?.forEach((t, i) => {
      if (!(NOTIFICATION_TYPES as readonly string[]).includes(t)) throw new ValidationError(`event_types[${i}]`, `${JSON.stringify(t)} is not an event type Accrue sends; known: ${NOTIFICATION_TYPES.join(', ')}`);
    });
    const e = await createWebhookEndpoint(orm.em.fork(), { url: url.toString(), eventTypes: types ? [...new Set(types)] : null });
    res.status(201).json({ data: e });
  });

  r.get('/v1/accrue/webhook-endpoints', allow('read', 'finance'), async (_req, res) => {
    res.json({ data: await listWebhookEndpoints(orm.em.fork()) });
  });

  r.post('/v1/accrue/webhook-endpoints/:id/archive', allow(), async (req, res) => {
    res.json({ data: await archiveWebhookEndpoint(orm.em.fork(), endpointId(req.params.id)) });
  });

  r.get('/v1/accrue/webhook-endpoints/:id/deliveries', allow('read', 'finance'), async (req, res) => {
    const q = req.query as Record<string, unknown>;
    const query = objectAt({ ...q }, 'query', ['limit', 'status']);
    let limit = 100;
    if (query.limit !== undefined) {
      limit = Number(query.limit);
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new ValidationError('limit', 'must be an integer from 1 to 1000');
    }
    const status = oneOf(query, 'status', ['PENDING', 'DELIVERED', 'FAILED', 'SKIPPED'] as const, 'query', { optional: true });
    res.json({ data: await listDeliveries(orm.em.fork(), endpointId(req.params.id), { limit, ...(status ? { status } : {}) }) });
  });

  return r;
}
