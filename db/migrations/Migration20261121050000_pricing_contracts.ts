import { Migration } from '@mikro-orm/migrations';

/**
 * Pricing and contracts: every product type, versioned product updates, rate types beyond FLAT
 * (tiers, pricing group values, subscriptions, packages), contract terms, commits and credits,
 * and the balance ledger. Prices live in rows, so a price change is data, never a migration.
 */
export class Migration20261121050000_pricing_contracts extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      alter table product drop constraint product_type_check;
      alter table product add constraint product_type_check
        check (type in ('USAGE', 'SUBSCRIPTION', 'FIXED', 'COMPOSITE', 'PRO_SERVICE'));
      -- name, billable_metric_id and tags stay the product's initial state; the other initial
      -- fields (pricing/presentation group keys, quantity conversion and rounding, composite
      -- products and tags) are in attributes; updates are versions that apply from their starting_at.
      alter table product add column attributes jsonb not null default '{}',
                          add column updates jsonb not null default '[]';

      alter table rate_card add column aliases jsonb not null default '[]',
                            add column updated_at timestamptz;

      alter table rate drop constraint rate_rate_type_check;
      alter table rate add constraint rate_rate_type_check
        check (rate_type in ('FLAT', 'TIERED', 'VOLUME', 'PACKAGE', 'PERCENTAGE', 'SUBSCRIPTION'));
      alter table rate alter column price drop not null;
      alter table rate add column tiers jsonb,
                       add column pricing_group_values jsonb not null default '{}',
                       add column quantity numeric,
                       add column is_prorated boolean,
                       add column billing_frequency text,
                       add column package_size numeric,
                       add column package_rounding text check (package_rounding in ('UP', 'DOWN')),
                       add column commit_rate jsonb;

      -- Overrides, scheduled charges, discounts and the other contract terms, each with its id.
      alter table contract add column terms jsonb not null default '{}';

      -- Commits (PREPAID / POSTPAID) and credits, on a contract or on the customer (contract_id null).
      create table balance_grant (
        id uuid primary key,
        customer_id uuid not null references customer(id),
        contract_id uuid references contract(id),
        kind text not null check (kind in ('PREPAID', 'POSTPAID', 'CREDIT')),
        product_id uuid not null references product(id),
        name text,
        description text,
        priority numeric not null default 0,
        applicable_product_ids jsonb,
        applicable_product_tags jsonb,
        applicable_contract_ids jsonb,
        specifiers jsonb,
        -- {credit_type_id, schedule_items: [{id, amount, starting_at, ending_before}]}
        access_schedule jsonb not null,
        -- {credit_type_id, do_not_invoice, schedule_items: [{id, timestamp, amount, quantity, unit_price}]}
        invoice_schedule jsonb,
        invoice_contract_id uuid references contract(id),
        rollover_fraction numeric,
        rate_type text,
        custom_fields jsonb not null default '{}',
        uniqueness_key text unique,
        created_at timestamptz not null default now(),
        archived_at timestamptz
      );
      create index balance_grant_customer_idx on balance_grant (customer_id);

      -- Every draw-down of a commit or credit by a frozen invoice (one entry per grant segment and
      -- invoice), and true-ups. Written in the transaction that freezes the invoice.
      create table balance_ledger (
        grant_id uuid not null references balance_grant(id),
        segment_id text not null,
        invoice_id uuid not null references invoice(id),
        contract_id uuid not null references contract(id),
        type text not null,
        amount numeric not null,
        ts timestamptz not null,
        created_at timestamptz not null default now(),
        primary key (grant_id, segment_id, invoice_id, type)
      );
      create index balance_ledger_invoice_idx on balance_ledger (invoice_id);

      alter table invoice add column subtotal numeric;
    `);
  }

  override async down(): Promise<void> {
    this.addSql(`
      drop table if exists balance_ledger, balance_grant;
      alter table invoice drop column if exists subtotal;
      alter table contract drop column if exists terms;
    `);
  }
}
