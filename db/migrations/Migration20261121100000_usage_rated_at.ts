import { Migration } from '@mikro-orm/migrations';

/**
 * When each aggregate row last changed: a finalized invoice is re-derived for late usage only
 * when some of its customer's usage was rated after it was frozen.
 */
export class Migration20261121100000_usage_rated_at extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      alter table usage_hourly add column rated_at timestamptz not null default now();
      alter table usage_daily add column rated_at timestamptz not null default now();
      alter table usage_unique_daily add column rated_at timestamptz not null default now();
      create index usage_daily_customer_day_idx on usage_daily (customer_id, day);
      create index usage_unique_daily_customer_day_idx on usage_unique_daily (customer_id, day);
    `);
  }

  override async down(): Promise<void> {
    this.addSql('alter table usage_hourly drop column rated_at; alter table usage_daily drop column rated_at; alter table usage_unique_daily drop column rated_at;');
  }
}
