import { Migration } from '@mikro-orm/migrations';

/**
 * Auto-recharge (prepaid_balance_threshold_configuration, kind `prepaid`) and spend-threshold
 * billing (spend_threshold_configuration, kind `spend`): each contract's state per kind
 * (`billing/recharge.ts`), written by the alert evaluator's rounds under the customer's lock, and
 * one row per charge — the crossing that started it is `n`, so one crossing is one charge.
 */
export class Migration20261208110000_recharge extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table contract_recharge_state (
        contract_id uuid not null references contract (id),
        kind text not null check (kind in ('prepaid', 'spend')),
        status text not null check (status in ('ok', 'recharging', 'failed')),
        crossings integer not null default 0,
        updated_at timestamptz not null default now(),
        primary key (contract_id, kind)
      );
      create table recharge (
        contract_id uuid not null references contract (id),
        kind text not null check (kind in ('prepaid', 'spend')),
        n integer not null,
        customer_id uuid not null references customer (id),
        amount numeric not null check (amount > 0),
        balance_before numeric not null,
        access_from timestamptz,
        status text not null check (status in ('PENDING', 'PAID', 'GRANTED', 'FAILED')),
        external_invoice_id text,
        grant_id uuid,
        failure text,
        workflow_started_at timestamptz,
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now(),
        primary key (contract_id, kind, n)
      );
      create index recharge_unstarted on recharge (created_at) where workflow_started_at is null;
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table recharge; drop table contract_recharge_state;');
  }
}
