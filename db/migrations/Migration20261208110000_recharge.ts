import { Migration } from '@mikro-orm/migrations';

/**
 * Auto-recharge (prepaid_balance_threshold_configuration): each contract's recharge state
 * (`billing/recharge.ts`), written by the alert evaluator's rounds under the customer's lock, and
 * one row per recharge — the crossing that started it is `n`, so one crossing is one recharge.
 */
export class Migration20261208110000_recharge extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table contract_recharge_state (
        contract_id uuid primary key references contract (id),
        status text not null check (status in ('ok', 'recharging', 'failed')),
        crossings integer not null default 0,
        updated_at timestamptz not null default now()
      );
      create table recharge (
        contract_id uuid not null references contract (id),
        n integer not null,
        customer_id uuid not null references customer (id),
        amount numeric not null check (amount > 0),
        balance_before numeric not null,
        status text not null check (status in ('PENDING', 'PAID', 'GRANTED', 'FAILED')),
        external_invoice_id text,
        grant_id uuid,
        failure text,
        workflow_started_at timestamptz,
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        primary key (contract_id, n)
      );
      create index recharge_unstarted on recharge (created_at) where workflow_started_at is null;
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table recharge; drop table contract_recharge_state;');
  }
}
