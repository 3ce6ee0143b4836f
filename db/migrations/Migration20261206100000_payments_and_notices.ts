import { Migration } from '@mikro-orm/migrations';

/**
 * Payments recorded against finalized invoices (wire transfers, cheques; later a billing provider's
 * `invoice.paid`), idempotent on (invoice, reference); and one row per lifecycle notice email
 * (trial, renewal, overdue), keyed by the notice, written before and after the SMTP send like
 * `invoice_email` (invariant I4).
 */
export class Migration20261206100000_payments_and_notices extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table invoice_payment (
        invoice_id uuid not null references invoice (id),
        reference text not null,
        amount numeric not null check (amount > 0),
        paid_at timestamptz not null,
        recorded_by text,
        source text not null default 'MANUAL',
        recorded_at timestamptz not null default now(),
        primary key (invoice_id, reference)
      );
      create table notification_email (
        key text primary key,
        kind text not null,
        contract_id uuid references contract (id),
        invoice_id uuid references invoice (id),
        to_address text not null,
        message_id text not null,
        status text not null check (status in ('SENDING', 'SENT', 'SKIPPED')),
        attempts integer not null default 1,
        started_at timestamptz not null,
        sent_at timestamptz
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table notification_email; drop table invoice_payment;');
  }
}
