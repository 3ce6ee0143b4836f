import { Migration } from '@mikro-orm/migrations';

/**
 * One row per approval reminder (invoice, reminder number), written before and after the SMTP
 * send like `invoice_email` (invariant I4): SENDING while a send may be in flight, SENT once the
 * server accepted it. A retried reminder activity finds the row and never sends it twice; only a
 * SENDING older than the email activity's timeout is sent again, with the same Message-ID.
 */
export class Migration20261206110000_approval_reminder extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table approval_reminder (
        invoice_id uuid not null references invoice (id),
        reminder_number integer not null check (reminder_number >= 1),
        recipient text not null,
        message_id text not null,
        status text not null check (status in ('SENDING', 'SENT')),
        attempts integer not null default 1,
        started_at timestamptz not null,
        sent_at timestamptz,
        primary key (invoice_id, reminder_number)
      );
      create index invoice_pending_approval_idx on invoice (created_at, id) where status = 'DRAFT';
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop index invoice_pending_approval_idx; drop table approval_reminder;');
  }
}
