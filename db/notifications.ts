import type { EntityManager } from '@mikro-orm/postgresql';
import { parseJsonExact } from '../billing/money.js';
import { uuidV5 } from './ids.js';
import { pgTextArray } from './sql.js';
import { OUTBOUND_CHANNEL, wake } from './wakeup.js';

/**
 * The outbox of outbound notifications (webhooks and alert emails). A producer writes its
 * notification in the same transaction as the change it reports — an alert's crossing, an invoice's
 * finalization, a lifecycle transition, a payment — so it is sent if and only if the change
 * committed. The id is derived from `dedupKey`, so a retried producer writes (and every retry of a
 * delivery sends) the same notification with the same id. The dispatcher (activities/outbound)
 * fixes which endpoints get it and starts its delivery workflow.
 */
export const NOTIFICATION_TYPES = [
  'alerts.spend_threshold_reached', 'alerts.usage_threshold_reached', 'alerts.invoice_total_reached',
  'alerts.low_remaining_credit_balance_reached', 'alerts.low_remaining_credit_percentage_reached',
  'alerts.low_remaining_commit_balance_reached', 'alerts.low_remaining_commit_percentage_reached',
  'invoice.finalized', 'contract.create', 'contract.end',
  'accrue.contract.lifecycle_changed', 'accrue.invoice.payment_status_changed', 'accrue.invoice.refunded',
  'payment_gate.payment_status',
] as const;
export type NotificationType = typeof NOTIFICATION_TYPES[number];

export interface NewNotification {
  type: NotificationType;
  properties: Record<string, unknown>;
  /** Unique per real-world occurrence, e.g. `invoice.finalized:<invoice id>`. */
  dedupKey: string;
  customerId?: string | null;
}

export const notificationIdFor = (dedupKey: string) => uuidV5(`notification:${dedupKey}`);

/** Writes the notification unless one with its key exists; run it inside the producer's transaction. */
export async function enqueueNotification(em: EntityManager, n: NewNotification): Promise<{ id: string; created: boolean }> {
  const id = notificationIdFor(n.dedupKey);
  const rows = await em.execute<{ id: string }[]>(`
    insert into outbound_event (id, type, properties, dedup_key, customer_id) values (?, ?, ?::jsonb, ?, ?)
    on conflict (dedup_key) do nothing returning id`, [id, n.type, JSON.stringify(n.properties), n.dedupKey, n.customerId ?? null]);
  if (rows.length) await wake(em, OUTBOUND_CHANNEL);
  return { id, created: rows.length > 0 };
}

export interface NotificationRow {
  id: string;
  type: string;
  properties: Record<string, unknown>;
  customerId: string | null;
  createdAt: string;
}

export async function loadNotification(em: EntityManager, id: string): Promise<NotificationRow | undefined> {
  // As text, parsed exactly: an amount stored with every digit (jsonb numbers are numeric) is sent so.
  const [r] = await em.execute<{ id: string; type: string; properties: string; customer_id: string | null; created_at: Date }[]>(
    `select id::text as id, type, properties::text as properties, customer_id::text as customer_id, created_at from outbound_event where id = ?`, [id]);
  return r && { id: r.id, type: r.type, properties: parseJsonExact(r.properties) as Record<string, unknown>, customerId: r.customer_id, createdAt: new Date(r.created_at).toISOString() };
}

/** The body every delivery of a notification sends, byte for byte (Metronome's shape). */
export function notificationBody(n: Pick<NotificationRow, 'id' | 'type' | 'properties'>): string {
  return JSON.stringify({ id: n.id, type: n.type, properties: n.properties });
}

/**
 * Fixes the endpoints of up to `limit` new notifications: one `webhook_delivery` row per active
 * endpoint subscribed to the type, written together with `endpoints_resolved_at`, so an endpoint
 * created later never gets an older notification and a rerun adds nothing. Concurrent
 * dispatchers take different rows (skip locked).
 */
export async function resolveEndpoints(em: EntityManager, limit: number): Promise<number> {
  return em.transactional(async (tx) => {
    const rows = await tx.execute<{ id: string }[]>(`
      select id::text as id from outbound_event where endpoints_resolved_at is null
      order by created_at limit ? for update skip locked`, [limit]);
    if (!rows.length) return 0;
    const ids = pgTextArray(rows.map((r) => r.id));
    await tx.execute(`
      insert into webhook_delivery (notification_id, endpoint_id)
      select n.id, e.id from outbound_event n join webhook_endpoint e
        on e.status = 'active' and e.created_at <= n.created_at and (e.event_types is null or n.type = any(e.event_types))
      where n.id = any(?::uuid[])
      on conflict do nothing`, [ids]);
    await tx.execute(`update outbound_event set endpoints_resolved_at = now() where id = any(?::uuid[])`, [ids]);
    return rows.length;
  });
}

export interface UndispatchedNotification {
  id: string;
  type: string;
  endpointIds: string[];
  /** Its customer has a billing email (alerts are emailed there too). */
  customerEmail: boolean;
  customerId: string | null;
}

/**
 * Notifications whose endpoints are fixed and whose delivery workflow has not been started yet,
 * except `excluding` (the ones this dispatcher is still working on).
 */
export async function undispatched(em: EntityManager, limit: number, excluding: string[] = []): Promise<UndispatchedNotification[]> {
  const rows = await em.execute<{ id: string; type: string; endpoint_ids: string[] | null; customer_email: boolean; customer_id: string | null }[]>(`
    select n.id::text as id, n.type, n.customer_id::text as customer_id,
           array(select d.endpoint_id::text from webhook_delivery d where d.notification_id = n.id order by d.endpoint_id) as endpoint_ids,
           exists (select 1 from customer c where c.id = n.customer_id and c.billing_email is not null) as customer_email
    from outbound_event n where n.dispatched_at is null and n.endpoints_resolved_at is not null
      ${excluding.length ? 'and n.id <> all(?::uuid[])' : ''}
    order by n.created_at limit ?`, [...(excluding.length ? [pgTextArray(excluding)] : []), limit]);
  return rows.map((r) => ({ id: r.id, type: r.type, endpointIds: r.endpoint_ids ?? [], customerEmail: r.customer_email, customerId: r.customer_id }));
}

export async function markDispatched(em: EntityManager, ids: string[]): Promise<void> {
  if (!ids.length) return;
  await em.execute(`update outbound_event set dispatched_at = now() where id = any(?::uuid[]) and dispatched_at is null`, [pgTextArray(ids)]);
}
