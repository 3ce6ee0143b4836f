import { Migration } from '@mikro-orm/migrations';

/**
 * Rating: hourly usage aggregates fed exactly once from `event`.
 *
 * Every event row records the id of the transaction that inserted it (`xid`). The rater
 * processes events in xid order only below the oldest transaction still running
 * (pg_snapshot_xmin), so no event can commit "behind" its cursor; the aggregates and the cursor
 * move in one transaction, so a retried or killed rater never counts an event twice.
 */
export class Migration20261121010000_rating extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      alter table event add column xid xid8 not null default pg_current_xact_id();
      create index event_xid_idx on event (xid);

      create table rating_cursor (
        id text primary key,
        xid xid8 not null,
        updated_at timestamptz not null default now()
      );
      insert into rating_cursor (id, xid) values ('events', '1');

      -- Every key an event's customer_id may carry: the customer's own id and its aliases.
      create view customer_event_key as
        select id::text as key, id as customer_id from customer
        union all
        select alias, customer_id from customer_ingest_alias;

      alter table billable_metric drop constraint billable_metric_aggregation_type_check;
      alter table billable_metric add constraint billable_metric_aggregation_type_check
        check (aggregation_type in ('COUNT', 'SUM', 'MAX', 'UNIQUE', 'LATEST'));
      -- Events with xid >= rating_from_xid are rated live; older ones by the metric's backfill,
      -- which walks xids upwards from 1; backfill_cursor_xid is the next xid it will process.
      alter table billable_metric
        add column rating_from_xid xid8 not null default '1',
        add column backfill_cursor_xid xid8 not null default '1',
        add column backfill_status text not null default 'DONE' check (backfill_status in ('RUNNING', 'DONE')),
        add column backfill_events_processed bigint not null default 0,
        add column backfill_events_total bigint not null default 0;

      -- metric × customer × group values × hour. group_values holds the values of the union of
      -- the metric's group keys ({} without group keys); any subset grouping is a sum over it.
      create table usage_hourly (
        metric_id uuid not null references billable_metric(id),
        customer_id uuid not null references customer(id),
        hour timestamptz not null,
        group_values jsonb not null default '{}',
        event_count bigint not null,
        value_sum numeric,
        value_max numeric,
        latest_ts timestamptz,
        latest_tx text,
        latest_value numeric,
        primary key (metric_id, customer_id, hour, group_values)
      );

      -- UNIQUE metrics: the distinct values seen per hour, so any window counts them exactly.
      create table usage_unique_hourly (
        metric_id uuid not null references billable_metric(id),
        customer_id uuid not null references customer(id),
        hour timestamptz not null,
        group_values jsonb not null default '{}',
        value text not null,
        primary key (metric_id, customer_id, hour, group_values, value)
      );

      -- Events whose customer_id matched no customer when rated; rated once the id or alias exists.
      create table event_unmatched (
        transaction_id text primary key references event(transaction_id),
        customer_key text not null,
        xid xid8 not null
      );
      create index event_unmatched_key_idx on event_unmatched (customer_key);

      -- Duplicate submissions of an already stored transaction_id, for /v1/events/search.
      create table event_duplicate (
        transaction_id text not null,
        received_at timestamptz not null default now()
      );
      create index event_duplicate_tx_idx on event_duplicate (transaction_id);
    `);
  }

  override async down(): Promise<void> {
    this.addSql(`
      drop table if exists event_duplicate, event_unmatched, usage_unique_hourly, usage_hourly, rating_cursor;
      drop view if exists customer_event_key;
      alter table billable_metric drop column rating_from_xid, drop column backfill_cursor_xid, drop column backfill_status,
        drop column backfill_events_processed, drop column backfill_events_total;
      drop index if exists event_xid_idx;
      alter table event drop column xid;
    `);
  }
}
