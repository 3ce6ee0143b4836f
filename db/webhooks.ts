import { randomBytes } from 'node:crypto';
import type { EntityManager } from '@mikro-orm/postgresql';
import { NotFoundError } from '../billing/errors.js';
import { newId } from './ids.js';
import { pgTextArray } from './sql.js';

/** Webhook endpoints and the record of every delivery to them. */
export interface WebhookEndpointView {
  id: string;
  url: string;
  event_types: string[] | null;
  status: 'active' | 'archived';
  created_at: string;
  archived_at: string | null;
}

type EndpointRow = { id: string; url: string; secret: string; event_types: string[] | null; status: 'active' | 'archived'; created_at: Date; archived_at: Date | null };

const view = (r: EndpointRow): WebhookEndpointView => ({
  id: r.id, url: r.url, event_types: r.event_types, status: r.status,
  created_at: new Date(r.created_at).toISOString(), archived_at: r.archived_at ? new Date(r.archived_at).toISOString() : null,
});

export async function createWebhookEndpoint(em: EntityManager, e: { url: string; eventTypes: string[] | null }): Promise<WebhookEndpointView & { secret: string }> {
  const id = newId();
  const secret = `whsec_${randomBytes(32).toString('base64url')}`;
  const [row] = await em.execute<EndpointRow[]>(`
    insert into webhook_endpoint (id, url, secret, event_types) values (?, ?, ?, ?::text[])
    returning id::text as id, url, secret, event_types, status, created_at, archived_at`,
  [id, e.url, secret, e.eventTypes ? pgTextArray(e.eventTypes) : null]);
  return { ...view(row!), secret };
}

export async function listWebhookEndpoints(em: EntityManager): Promise<WebhookEndpointView[]> {
  const rows = await em.execute<EndpointRow[]>(`select id::text as id, url, secret, event_types, status, created_at, archived_at from webhook_endpoint order by created_at, id`);
  return rows.map(view);
}

export async function archiveWebhookEndpoint(em: EntityManager, id: string): Promise<WebhookEndpointView> {
  const [row] = await em.execute<EndpointRow[]>(`
    update webhook_endpoint set status = 'archived', archived_at = coalesce(archived_at, now()) where id = ?
    returning id::text as id, url, secret, event_types, status, created_at, archived_at`, [id]);
  if (!row) throw new NotFoundError('webhook endpoint', id, 'id');
  return view(row);
}

export async function loadWebhookEndpoint(em: EntityManager, id: string): Promise<(WebhookEndpointView & { secret: string }) | undefined> {
  const [row] = await em.execute<EndpointRow[]>(`select id::text as id, url, secret, event_types, status, created_at, archived_at from webhook_endpoint where id = ?`, [id]);
  return row && { ...view(row), secret: row.secret };
}

export interface DeliveryView {
  notification_id: string;
  type: string;
  status: 'PENDING' | 'DELIVERED' | 'FAILED' | 'SKIPPED';
  attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  last_attempt_at: string | null;
  next_attempt_at: string | null;
  delivered_at: string | null;
  created_at: string;
}

export async function listDeliveries(em: EntityManager, endpointId: string, opts: { limit: number; status?: string }): Promise<DeliveryView[]> {
  if (!(await loadWebhookEndpoint(em, endpointId))) throw new NotFoundError('webhook endpoint', endpointId, 'id');
  const rows = await em.execute<{ notification_id: string; type: string; status: DeliveryView['status']; attempts: number; last_status_code: number | null; last_error: string | null; last_attempt_at: Date | null; next_attempt_at: Date | null; delivered_at: Date | null; created_at: Date }[]>(`
    select d.notification_id::text as notification_id, n.type, d.status, d.attempts, d.last_status_code, d.last_error,
           d.last_attempt_at, d.next_attempt_at, d.delivered_at, d.created_at
    from webhook_delivery d join outbound_event n on n.id = d.notification_id
    where d.endpoint_id = ? ${opts.status ? 'and d.status = ?' : ''}
    order by d.created_at desc, d.notification_id limit ?`, [endpointId, ...(opts.status ? [opts.status] : []), opts.limit]);
  const iso = (d: Date | null) => (d ? new Date(d).toISOString() : null);
  return rows.map((r) => ({
    notification_id: r.notification_id, type: r.type, status: r.status, attempts: r.attempts, last_status_code: r.last_status_code,
    last_error: r.last_error, last_attempt_at: iso(r.last_attempt_at), next_attempt_at: iso(r.next_attempt_at), delivered_at: iso(r.delivered_at), created_at: iso(r.created_at)!,
  }));
}

/** Records one delivery attempt; `nextAttemptAt` when another will follow. */
export async function recordDeliveryAttempt(em: EntityManager, a: { notificationId: string; endpointId: string; ok: boolean; statusCode?: number; error?: string; nextAttemptAt?: Date | null }): Promise<void> {
  await em.execute(`
    update webhook_delivery set attempts = attempts + 1, last_status_code = ?, last_error = ?, last_attempt_at = now(),
      next_attempt_at = ?, status = case when ? then 'DELIVERED' else status end, delivered_at = case when ? then now() else delivered_at end
    where notification_id = ? and endpoint_id = ? and status = 'PENDING'`,
  [a.statusCode ?? null, a.error?.slice(0, 1000) ?? null, a.ok ? null : a.nextAttemptAt ?? null, a.ok, a.ok, a.notificationId, a.endpointId]);
}

export async function deliveryStatus(em: EntityManager, notificationId: string, endpointId: string): Promise<DeliveryView['status'] | undefined> {
  const [r] = await em.execute<{ status: DeliveryView['status'] }[]>(`select status from webhook_delivery where notification_id = ? and endpoint_id = ?`, [notificationId, endpointId]);
  return r?.status;
}

/** Ends a delivery that will not be attempted again (retries exhausted, endpoint archived, address refused). */
export async function endDelivery(em: EntityManager, notificationId: string, endpointId: string, status: 'FAILED' | 'SKIPPED', error: string): Promise<void> {
  await em.execute(`
    update webhook_delivery set status = ?, last_error = coalesce(?, last_error), next_attempt_at = null
    where notification_id = ? and endpoint_id = ? and status = 'PENDING'`, [status, error.slice(0, 1000), notificationId, endpointId]);
}
