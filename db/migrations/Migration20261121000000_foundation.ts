import { Migration } from '@mikro-orm/migrations';

/** Foundation schema: tokens, customers, metrics, events, pricing, contracts, invoices, email log. */
export class Migration20261121000000_foundation extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table api_token (
        id uuid primary key,
        name text not null,
        token_hash text not null unique,
        scope text not null check (scope in ('admin', 'ingest', 'finance', 'read')),
        created_at timestamptz not null default now(),
        revoked_at timestamptz
      );

      create table customer (
        id uuid primary key,
        name text not null,
        billing_email text,
        custom_fields jsonb not null default '{}',
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        archived_at timestamptz
      );

      -- Ingest aliases are unique across customers so an event maps to one customer at most.
      create table customer_ingest_alias (
        alias text primary key,
        customer_id uuid not null references customer(id),
        position int not null
      );
      create index customer_ingest_alias_customer_idx on customer_ingest_alias (customer_id);

      create table billable_metric (
        id uuid primary key,
        name text not null,
        aggregation_type text not null check (aggregation_type in ('COUNT', 'SUM')),
        aggregation_key text,
        event_type_filter jsonb,
        property_filters jsonb not null default '[]',
        group_keys jsonb not null default '[]',
        custom_fields jsonb not null default '{}',
        created_at timestamptz not null default now(),
        archived_at timestamptz
      );

      -- Raw events, idempotent on transaction_id (insert ... on conflict do nothing).
      -- customer_id keeps what the sender wrote (an Accrue id or an ingest alias); it is matched to
      -- a customer when read, so events for an alias that appears later are never lost.
      create table event (
        transaction_id text primary key,
        customer_id text not null,
        event_type text not null,
        ts timestamptz not null,
        properties jsonb not null default '{}',
        ingested_at timestamptz not null default now()
      );
      create index event_customer_type_ts_idx on event (customer_id, event_type, ts);

      create table product (
        id uuid primary key,
        name text not null,
        type text not null check (type in ('USAGE')),
        billable_metric_id uuid references billable_metric(id),
        tags jsonb not null default '[]',
        custom_fields jsonb not null default '{}',
        created_at timestamptz not null default now(),
        archived_at timestamptz
      );

      create table rate_card (
        id uuid primary key,
        name text not null,
        description text,
        credit_type_id uuid not null,
        custom_fields jsonb not null default '{}',
        created_at timestamptz not null default now(),
        archived_at timestamptz
      );

      create table rate (
        id uuid primary key,
        rate_card_id uuid not null references rate_card(id),
        product_id uuid not null references product(id),
        rate_type text not null check (rate_type in ('FLAT')),
        price numeric not null,
        entitled boolean not null,
        starting_at timestamptz not null,
        ending_before timestamptz,
        created_at timestamptz not null default now(),
        check (ending_before is null or ending_before > starting_at)
      );
      create index rate_rate_card_idx on rate (rate_card_id, product_id, starting_at);

      create table contract (
        id uuid primary key,
        customer_id uuid not null references customer(id),
        rate_card_id uuid not null references rate_card(id),
        name text,
        starting_at timestamptz not null,
        ending_before timestamptz,
        usage_statement_frequency text not null check (usage_statement_frequency in ('MONTHLY', 'QUARTERLY', 'ANNUAL', 'WEEKLY')),
        usage_statement_day text not null check (usage_statement_day in ('FIRST_OF_MONTH', 'CONTRACT_START', 'CUSTOM_DATE')),
        billing_anchor_date timestamptz,
        uniqueness_key text unique,
        custom_fields jsonb not null default '{}',
        created_at timestamptz not null default now(),
        archived_at timestamptz,
        check (ending_before is null or ending_before > starting_at)
      );
      create index contract_customer_idx on contract (customer_id);

      -- A stored invoice is a frozen period. Drafts of periods that are still open are computed on
      -- read; their id is derived from (contract, period start) so it never changes when frozen.
      create table invoice (
        id uuid primary key,
        customer_id uuid not null references customer(id),
        contract_id uuid not null references contract(id),
        period_start timestamptz not null,
        period_end timestamptz not null,
        status text not null check (status in ('DRAFT', 'FINALIZED', 'VOID')),
        approval_status text not null check (approval_status in ('PENDING_APPROVAL', 'APPROVED', 'REJECTED')),
        approved_by text,
        rejection_reason text,
        credit_type_id uuid not null,
        credit_type_name text not null,
        line_items jsonb not null,
        total numeric not null,
        frozen_at timestamptz not null,
        finalized_at timestamptz,
        emailed_at timestamptz,
        email_message_id text,
        created_at timestamptz not null default now(),
        unique (contract_id, period_start)
      );
      create index invoice_customer_idx on invoice (customer_id, period_start);

      -- A finalized invoice never changes (invariant I3), enforced by the database itself.
      create function invoice_finalized_is_immutable() returns trigger language plpgsql as $$
      begin
        if old.status = 'FINALIZED' and (
             new.status is distinct from old.status or new.line_items is distinct from old.line_items
          or new.total is distinct from old.total or new.period_start is distinct from old.period_start
          or new.period_end is distinct from old.period_end or new.finalized_at is distinct from old.finalized_at) then
          raise exception 'invoice % is finalized and cannot change', old.id using errcode = 'check_violation';
        end if;
        return new;
      end $$;
      create trigger invoice_finalized_is_immutable before update on invoice
        for each row execute function invoice_finalized_is_immutable();
    `);
  }

  override async down(): Promise<void> {
    this.addSql(`
      drop table if exists invoice, contract, rate, rate_card, product, event, billable_metric,
        customer_ingest_alias, customer, api_token cascade;
      drop function if exists invoice_finalized_is_immutable();
    `);
  }
}
