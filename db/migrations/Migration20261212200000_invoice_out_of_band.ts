import { Migration } from '@mikro-orm/migrations';

/**
 * `invoice_external.out_of_band_payment`: the manual payment (reference, amount, paid_at,
 * recorded_by) for which Accrue marks the invoice's Stripe copy paid out of band. Written before
 * Stripe is asked, so whoever then sees the copy paid out of band (the payment request itself, a
 * retry of it, the sync, dunning, the `invoice.paid` webhook) records that payment — never a
 * Stripe payment of the same money.
 */
export class Migration20261212200000_invoice_out_of_band extends Migration {
  override async up(): Promise<void> {
    this.addSql('alter table invoice_external add column out_of_band_payment jsonb;');
  }

  override async down(): Promise<void> {
    this.addSql('alter table invoice_external drop column out_of_band_payment;');
  }
}
