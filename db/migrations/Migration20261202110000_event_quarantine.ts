import { Migration } from '@mikro-orm/migrations';

/**
 * Events the rater could not aggregate (a value PostgreSQL cannot hold, a key too large for an
 * index, ...), moved out of `event` so that one bad event never stops rating for everyone. They
 * are counted nowhere, shown by /v1/events/search and counted by /health.
 */
export class Migration20261202110000_event_quarantine extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table event_quarantine (
        transaction_id text primary key,
        customer_id text not null,
        event_type text not null,
        ts timestamptz not null,
        properties jsonb not null,
        xid xid8 not null,
        reason text not null,
        quarantined_at timestamptz not null default now()
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table if exists event_quarantine;');
  }
}
