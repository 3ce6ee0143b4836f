import { Migration } from '@mikro-orm/migrations';

/**
 * Alerts (threshold notifications), their state per customer, and outbound notifications.
 *
 * - `alert`: Metronome's threshold notification; `customer_id` null = every customer. A released
 *   uniqueness key is kept for the record but no longer blocks reuse.
 * - `customer_alert_state`: one row per (alert, customer) once evaluated. The evaluator changes it
 *   and writes the `outbound_event` a crossing causes in one transaction, under a per-customer lock,
 *   so a crossing is recorded once and never lost.
 * - `alert_dirty`: marks of customers whose alert inputs changed (a rating pass touched them, an
 *   alert was created or reset, a balance changed). Append-only for markers (a rating pass under
 *   REPEATABLE READ only inserts, so it never conflicts with the evaluator); an evaluation removes
 *   the marks up to the newest it read, never one made while it ran.
 * - `outbound_event`: the outbox of outbound events (`{id, type, properties}` as sent), unique on
 *   `dedup_key` so a retried producer writes one. `endpoints_resolved_at` fixes which endpoints
 *   get it (`webhook_delivery` rows, written with it); `dispatched_at` is set once its delivery
 *   workflow runs.
 * - `webhook_endpoint` / `webhook_delivery`: where notifications go and how each delivery went.
 */
export class Migration20261207100000_alerts_and_webhooks extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table alert (
        id uuid primary key,
        name text not null,
        alert_type text not null,
        threshold numeric not null,
        customer_id uuid references customer (id),
        billable_metric_id uuid references billable_metric (id),
        group_values jsonb not null default '[]',
        credit_type_id text,
        evaluate_on_create boolean not null default true,
        uniqueness_key text,
        uniqueness_key_released boolean not null default false,
        gate_access boolean not null default false,
        gate_product_ids uuid[],
        status text not null default 'enabled' check (status in ('enabled', 'archived')),
        created_at timestamptz not null default now(),
        archived_at timestamptz
      );
      create unique index alert_uniqueness_key_idx on alert (uniqueness_key) where uniqueness_key is not null and not uniqueness_key_released;
      create index alert_customer_idx on alert (customer_id) where status = 'enabled';

      create table customer_alert_state (
        alert_id uuid not null references alert (id),
        customer_id uuid not null references customer (id),
        status text not null check (status in ('ok', 'in_alarm', 'evaluating')),
        value numeric,
        triggered_by text,
        window_end timestamptz,
        fired integer not null default 0,
        updated_at timestamptz not null default now(),
        primary key (alert_id, customer_id)
      );
      create index customer_alert_state_customer_idx on customer_alert_state (customer_id);
      create index customer_alert_state_window_idx on customer_alert_state (window_end) where status = 'in_alarm';

      create table alert_dirty (
        seq bigserial primary key,
        customer_id uuid not null,
        marked_at timestamptz not null default now()
      );
      create index alert_dirty_customer_idx on alert_dirty (customer_id, seq);

      create table outbound_event (
        id uuid primary key,
        type text not null,
        properties jsonb not null,
        dedup_key text not null unique,
        customer_id uuid,
        created_at timestamptz not null default now(),
        endpoints_resolved_at timestamptz,
        dispatched_at timestamptz
      );
      create index outbound_event_undispatched_idx on outbound_event (created_at) where dispatched_at is null;

      create table webhook_endpoint (
        id uuid primary key,
        url text not null,
        secret text not null,
        event_types text[],
        status text not null default 'active' check (status in ('active', 'archived')),
        created_at timestamptz not null default now(),
        archived_at timestamptz
      );

      create table webhook_delivery (
        notification_id uuid not null references outbound_event (id),
        endpoint_id uuid not null references webhook_endpoint (id),
        status text not null default 'PENDING' check (status in ('PENDING', 'DELIVERED', 'FAILED', 'SKIPPED')),
        attempts integer not null default 0,
        last_status_code integer,
        last_error text,
        last_attempt_at timestamptz,
        next_attempt_at timestamptz,
        delivered_at timestamptz,
        created_at timestamptz not null default now(),
        primary key (notification_id, endpoint_id)
      );
      create index webhook_delivery_endpoint_idx on webhook_delivery (endpoint_id, created_at desc);

      create table alert_email (
        notification_id uuid primary key references outbound_event (id),
        recipient text not null,
        message_id text not null,
        status text not null check (status in ('SENDING', 'SENT')),
        attempts integer not null default 1,
        started_at timestamptz not null,
        sent_at timestamptz
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table alert_email; drop table webhook_delivery; drop table webhook_endpoint; drop table outbound_event;
      drop table alert_dirty; drop table customer_alert_state; drop table alert;`);
  }
}
