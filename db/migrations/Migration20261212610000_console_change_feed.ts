import { Migration } from '@mikro-orm/migrations';

/**
 * The console's change feed: every statement that writes `invoice` or `invoice_payment` notifies
 * `accrue_console` in its own transaction (delivered at commit, folded into one notice per
 * transaction by PostgreSQL), so each API process keeps one LISTEN connection for every open
 * finance page instead of each page polling the tables (api/console-feed.ts).
 */
export class Migration20261212610000_console_change_feed extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create function console_changed() returns trigger language plpgsql as $$
      begin
        perform pg_notify('accrue_console', '');
        return null;
      end $$;
      create trigger invoice_console_changed after insert or update or delete on invoice
        for each statement execute function console_changed();
      create trigger invoice_payment_console_changed after insert or update or delete on invoice_payment
        for each statement execute function console_changed();
    `);
  }

  override async down(): Promise<void> {
    this.addSql(`
      drop trigger invoice_console_changed on invoice;
      drop trigger invoice_payment_console_changed on invoice_payment;
      drop function console_changed();
    `);
  }
}
