import { Migration } from '@mikro-orm/migrations';

/**
 * Alert evaluations that failed on the data itself (db/alerts.ts): a customer whose whole
 * evaluation fails (alert_id null: its drafts, balances or recharge cannot be computed from what is
 * stored), or one alert of a customer (a threshold beyond what the decimal helper reads). The
 * customer is skipped, or only that alert, until the row is removed (archiving or resetting the
 * alert removes it); every other customer is evaluated as usual. /health counts the customers.
 */
export class Migration20261212400000_alert_quarantine extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table alert_quarantine (
        customer_id uuid not null,
        alert_id uuid,
        reason text not null,
        quarantined_at timestamptz not null default now()
      );
      create unique index alert_quarantine_key on alert_quarantine (customer_id, coalesce(alert_id, '00000000-0000-0000-0000-000000000000'::uuid));
      create index alert_quarantine_alert on alert_quarantine (alert_id) where alert_id is not null;`);
  }

  override async down(): Promise<void> {
    this.addSql('drop table if exists alert_quarantine;');
  }
}
