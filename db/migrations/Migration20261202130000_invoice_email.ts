import { Migration } from '@mikro-orm/migrations';

/**
 * One row per invoice email, written before and after the SMTP send (invariant I4): SENDING while
 * a send may be in flight (a retry waits until it is older than the send's time limit), SENT once
 * the server accepted it; SKIPPED when the customer had no billing email when the invoice closed
 * (its close is done; a later attempt after an email was added sends it).
 */
export class Migration20261202130000_invoice_email extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table invoice_email (
        invoice_id uuid primary key references invoice (id),
        message_id text not null,
        status text not null check (status in ('SENDING', 'SENT', 'SKIPPED')),
        attempts integer not null default 1,
        started_at timestamptz not null,
        sent_at timestamptz
      );
      insert into invoice_email (invoice_id, message_id, status, started_at, sent_at)
        select id, coalesce(email_message_id, '<invoice-' || id || '@accrue.local>'), 'SENT', emailed_at, emailed_at from invoice where emailed_at is not null;
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table invoice_email;');
  }
}
