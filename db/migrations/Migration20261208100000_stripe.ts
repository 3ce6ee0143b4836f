import { Migration } from '@mikro-orm/migrations';

/**
 * Payments through Stripe:
 * - `customer_billing_config`: a customer's billing provider (Metronome's billing config), one row
 *   per (customer, provider);
 * - `invoice_external`: an Accrue invoice's copy at the provider — its id there and last known
 *   status — written by the sync activity and by inbound webhooks;
 * - `stripe_event`: inbound webhook events already handled (a replay changes nothing);
 * - `invoice_refund`: refunds Stripe reported for an invoice's charge;
 * - `invoice_dunning`: the dunning of an unpaid invoice (its workflow writes each step).
 */
export class Migration20261208100000_stripe extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table customer_billing_config (
        customer_id uuid not null references customer (id),
        provider text not null check (provider in ('stripe')),
        provider_customer_id text not null,
        collection_method text not null check (collection_method in ('charge_automatically', 'send_invoice')),
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        primary key (customer_id, provider)
      );
      create table invoice_external (
        invoice_id uuid primary key references invoice (id),
        provider text not null,
        external_id text,
        external_status text not null,
        collection_method text not null,
        hosted_url text,
        updated_at timestamptz not null default now()
      );
      create unique index invoice_external_by_external_id on invoice_external (provider, external_id) where external_id is not null;
      create table stripe_event (
        id text primary key,
        type text not null,
        invoice_id uuid,
        outcome text not null,
        received_at timestamptz not null default now()
      );
      create table invoice_refund (
        invoice_id uuid not null references invoice (id),
        reference text not null,
        amount numeric not null check (amount >= 0),
        refunded_at timestamptz not null default now(),
        primary key (invoice_id, reference)
      );
      create table invoice_dunning (
        invoice_id uuid primary key references invoice (id),
        status text not null check (status in ('ACTIVE', 'PAID', 'EXHAUSTED', 'STOPPED')),
        step integer not null,
        steps integer not null,
        next_attempt_at timestamptz,
        started_at timestamptz not null default now(),
        updated_at timestamptz not null default now()
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table invoice_dunning; drop table invoice_refund; drop table stripe_event; drop table invoice_external; drop table customer_billing_config;');
  }
}
