import { Migration } from '@mikro-orm/migrations';

/**
 * Events partitioned by ingestion day, deduplicated through `event_key`.
 *
 * - `event` is partitioned by range of `ingested_at` (UTC days, `event_pYYYYMMDD`), with a default
 *   partition that catches any row no day partition covers (a day whose partition was not created
 *   in time, and events parked by retention). Each partition carries the xid index the rater
 *   reads; ingest writes only today's partition.
 * - `event_key` holds every transaction_id ingested within the deduplication window, with the
 *   day and xid of its event. It is the one unique index on transaction ids, so deduplication is
 *   exact across partitions; lookups by id go through it to the right partition and xid.
 * - Partitions are created ahead and retired by `event_partition_ensure` / `event_partition_retire`
 *   (SECURITY DEFINER: the app role runs them without owning the table), which the
 *   `event-partitions` Temporal Schedule calls (db/event-partitions.ts).
 *
 * Existing events are copied into the new table (one statement per table; fine for the sizes
 * Accrue has been run at before partitioning).
 */
export class Migration20261211100000_event_partitions extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      alter table event_unmatched drop constraint if exists event_unmatched_transaction_id_fkey;
      alter table event rename to event_unpartitioned;
      alter index event_xid_idx rename to event_unpartitioned_xid_idx;
      alter table event_unpartitioned rename constraint event_pkey to event_unpartitioned_pkey;

      create table event (
        transaction_id text not null,
        customer_id text not null,
        event_type text not null,
        ts timestamptz not null,
        properties jsonb not null default '{}',
        ingested_at timestamptz not null default now(),
        xid xid8 not null default pg_current_xact_id()
      ) partition by range (ingested_at);
      create index event_xid_idx on event (xid);
      create table event_default partition of event default;

      create table event_key (
        transaction_id text primary key,
        ingested_at timestamptz not null default now(),
        xid xid8 not null default pg_current_xact_id()
      );
      create index event_key_ingested_at_idx on event_key using brin (ingested_at);
      create index event_duplicate_received_at_idx on event_duplicate using brin (received_at);

      -- The partition for one UTC day: created empty and attached (the parent is not locked against
      -- ingest), unless rows for that day already sit in the default partition (they stay there).
      create function event_partition_ensure(day date) returns text
        language plpgsql security definer set search_path = public as $$
      declare
        name text := 'event_p' || to_char(day, 'YYYYMMDD');
        lo timestamptz := day::timestamp at time zone 'UTC';
        hi timestamptz := (day + 1)::timestamp at time zone 'UTC';
      begin
        if to_regclass(name) is not null then return 'exists'; end if;
        if exists (select 1 from event_default where ingested_at >= lo and ingested_at < hi) then return 'rows in default partition'; end if;
        set local lock_timeout = '2s';
        execute format('create table %I (like event including defaults including constraints)', name);
        execute format('alter table event attach partition %I for values from (%L) to (%L)', name, lo, hi);
        return 'created';
      end $$;

      -- Retires one day partition whose day ended before cutoff: refused while any of its events
      -- is unrated; events still waiting for their customer (event_unmatched) move to the default
      -- partition, so they are rated when the customer appears; the rest is dropped. Aggregates
      -- keep the history.
      create function event_partition_retire(name text, cutoff timestamptz) returns text
        language plpgsql security definer set search_path = public as $$
      declare
        bound text;
        hi timestamptz;
        parked bigint;
        unrated boolean;
      begin
        select pg_get_expr(c.relpartbound, c.oid) into bound from pg_class c join pg_inherits i on i.inhrelid = c.oid
         where c.relname = name and i.inhparent = 'event'::regclass;
        if bound is null then return 'not a partition of event'; end if;
        hi := substring(bound from 'TO \\(''([^'']+)''\\)')::timestamptz;
        if hi is null or hi > cutoff then return 'inside the retention window'; end if;
        execute format('select exists (select 1 from %I p, rating_cursor c where c.id = ''events'' and p.xid >= c.xid)', name) into unrated;
        if unrated then return 'holds unrated events'; end if;
        set local lock_timeout = '2s';
        execute format('alter table event detach partition %I', name);
        execute format('insert into event select p.* from %I p where exists (select 1 from event_unmatched u where u.transaction_id = p.transaction_id)', name);
        get diagnostics parked = row_count;
        execute format('drop table %I', name);
        return 'dropped' || case when parked > 0 then ', ' || parked || ' unmatched events parked' else '' end;
      end $$;

      insert into event_key (transaction_id, ingested_at, xid) select transaction_id, ingested_at, xid from event_unpartitioned;
      select event_partition_ensure(d::date)
        from generate_series((select coalesce(min(ingested_at), now()) from event_unpartitioned) at time zone 'UTC',
                             now() at time zone 'UTC' + interval '7 days', interval '1 day') d;
      insert into event (transaction_id, customer_id, event_type, ts, properties, ingested_at, xid)
        select transaction_id, customer_id, event_type, ts, properties, ingested_at, xid from event_unpartitioned;
      drop table event_unpartitioned;
    `);
  }

  override async down(): Promise<void> {
    this.addSql(`
      create table event_unpartitioned (
        transaction_id text primary key, customer_id text not null, event_type text not null, ts timestamptz not null,
        properties jsonb not null default '{}', ingested_at timestamptz not null default now(), xid xid8 not null default pg_current_xact_id());
      insert into event_unpartitioned select transaction_id, customer_id, event_type, ts, properties, ingested_at, xid from event;
      drop table event cascade;
      drop table event_key;
      drop function event_partition_ensure(date);
      drop function event_partition_retire(text, timestamptz);
      drop index event_duplicate_received_at_idx;
      alter table event_unpartitioned rename to event;
      alter table event rename constraint event_unpartitioned_pkey to event_pkey;
      create index event_xid_idx on event (xid);
      alter table event_unmatched add foreign key (transaction_id) references event(transaction_id);
    `);
  }
}
