import { Migration } from '@mikro-orm/migrations';

/**
 * `event_partition_retire` also refuses a partition that a metric backfill has yet to read:
 * events between a RUNNING backfill's cursor and the metric's `rating_from_xid` are rated for
 * every older metric but not yet for the new one, so dropping them would leave its history short
 * for good. The check runs after the function takes the rating cursor's lock (SHARE mode), the
 * lock metric creation and backfill chunks write under: a metric created concurrently either
 * committed first (and is seen) or starts after the partition is gone (its backfill covers only
 * what is retained, as documented).
 */
const RETIRE = (checkBackfill: boolean) => `
      create or replace function event_partition_retire(name text, cutoff timestamptz) returns text
        language plpgsql security definer set search_path = public as $$
      declare
        bound text;
        hi timestamptz;
        parked bigint;
        unrated boolean;
        backfilling text;
      begin
        select pg_get_expr(c.relpartbound, c.oid) into bound from pg_class c join pg_inherits i on i.inhrelid = c.oid
         where c.relname = name and i.inhparent = 'event'::regclass;
        if bound is null then return 'not a partition of event'; end if;
        hi := substring(bound from 'TO \\(''([^'']+)''\\)')::timestamptz;
        if hi is null or hi > cutoff then return 'inside the retention window'; end if;
        set local lock_timeout = '2s';
        ${checkBackfill ? `lock table rating_cursor in share mode;` : ''}
        execute format('select exists (select 1 from %I p, rating_cursor c where c.id = ''events'' and p.xid >= c.xid)', name) into unrated;
        if unrated then return 'holds unrated events'; end if;
        ${checkBackfill ? `execute format('select string_agg(m.id::text, '', '' order by m.id) from billable_metric m
                          where m.backfill_status = ''RUNNING''
                            and exists (select 1 from %I p where p.xid >= m.backfill_cursor_xid and p.xid < m.rating_from_xid)', name) into backfilling;
        if backfilling is not null then return 'a metric backfill still reads it (billable metric ' || backfilling || ')'; end if;` : ''}
        execute format('alter table event detach partition %I', name);
        execute format('insert into event select p.* from %I p where exists (select 1 from event_unmatched u where u.transaction_id = p.transaction_id)', name);
        get diagnostics parked = row_count;
        execute format('drop table %I', name);
        return 'dropped' || case when parked > 0 then ', ' || parked || ' unmatched events parked' else '' end;
      end $$;`;

export class Migration20261212600000_retire_waits_for_backfill extends Migration {
  override async up(): Promise<void> {
    this.addSql(RETIRE(true));
  }

  override async down(): Promise<void> {
    this.addSql(RETIRE(false));
  }
}
