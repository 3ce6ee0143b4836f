import { Migration } from '@mikro-orm/migrations';

/**
 * Events the rater could not aggregate (a value PostgreSQL cannot hold, a key too large for an
 * index, ...), so that one bad event never stops rating for everyone; shown by /v1/events/search
 * and counted by /health. A new event that fails (metric_id null) is moved out of `event` and
 * counted nowhere; an older event that fails only a new metric's backfill (metric_id set) stays
 * counted for the metrics that had already counted it and is skipped by that metric alone.
 */
export class Migration20261202110000_event_quarantine extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table event_quarantine (
        transaction_id text not null,
        metric_id uuid references billable_metric(id),
        customer_id text not null,
        event_type text not null,
        ts timestamptz not null,
        properties jsonb not null,
        xid xid8 not null,
        reason text not null,
        quarantined_at timestamptz not null default now(),
        unique nulls not distinct (transaction_id, metric_id)
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table if exists event_quarantine;');
  }
}
