import { Migration } from '@mikro-orm/migrations';

/** A usage collector counts the rows it skipped for falling outside the ingest window. */
export class Migration20261212620000_collector_rows_outside_window extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table usage_collector add column rows_outside_window bigint not null default 0, add column last_run_outside_window int`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table usage_collector drop column rows_outside_window, drop column last_run_outside_window`);
  }
}
