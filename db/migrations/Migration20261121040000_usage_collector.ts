import { Migration } from '@mikro-orm/migrations';

/** Usage collectors: scheduled read-only SQL against a source PostgreSQL, turned into events. */
export class Migration20261121040000_usage_collector extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table usage_collector (
        id uuid primary key,
        name text not null,
        -- Connection string of the source database, with its credentials: stored here only, never logged
        -- or returned by the API. Give the collector a read-only role there.
        source_url text not null,
        query text not null,
        event_type text not null,
        interval_seconds int not null check (interval_seconds >= 1),
        -- Windows [start, end) up to here have been collected.
        collected_until timestamptz not null,
        last_run_at timestamptz,
        last_run_events int,
        created_at timestamptz not null default now(),
        archived_at timestamptz
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table if exists usage_collector;');
  }
}
