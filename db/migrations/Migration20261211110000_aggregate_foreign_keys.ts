import { Migration } from '@mikro-orm/migrations';

/**
 * The usage aggregates lose their foreign keys to customer and billable_metric: the rater is their
 * only writer and takes both ids from rows it reads in the same snapshot (customer_event_key,
 * billable_metric), and neither table ever deletes a row (customers and metrics are archived).
 * The four checks per upserted aggregate row were a quarter of the rater's statement time
 * (bench:ingest, docs/benchmarks.md).
 */
const TABLES = ['usage_hourly', 'usage_daily', 'usage_unique_hourly', 'usage_unique_daily'];

export class Migration20261211110000_aggregate_foreign_keys extends Migration {
  override async up(): Promise<void> {
    this.addSql(TABLES.map((t) => `alter table ${t} drop constraint if exists ${t}_metric_id_fkey, drop constraint if exists ${t}_customer_id_fkey;`).join('\n'));
  }

  override async down(): Promise<void> {
    this.addSql(TABLES.map((t) => `alter table ${t} add foreign key (metric_id) references billable_metric(id), add foreign key (customer_id) references customer(id);`).join('\n'));
  }
}
