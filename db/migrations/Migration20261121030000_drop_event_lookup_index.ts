import { Migration } from '@mikro-orm/migrations';

/** Usage is read from aggregates now; the raw-event lookup index only slowed every ingest. */
export class Migration20261121030000_drop_event_lookup_index extends Migration {
  override async up(): Promise<void> {
    this.addSql('drop index if exists event_customer_type_ts_idx;');
  }

  override async down(): Promise<void> {
    this.addSql('create index event_customer_type_ts_idx on event (customer_id, event_type, ts);');
  }
}
