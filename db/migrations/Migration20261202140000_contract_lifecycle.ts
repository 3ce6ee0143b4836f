import { Migration } from '@mikro-orm/migrations';

/**
 * A contract's lifecycle as a transition log: one row per visible state change, numbered
 * by the contract's workflow (`seq`), so a retried or replayed record writes nothing twice. Row 0 is
 * written with the contract (TRIAL or ACTIVE). Contracts from before this log have no rows; their
 * state reads as ACTIVE (or ARCHIVED) until their workflow records one.
 */
export class Migration20261202140000_contract_lifecycle extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table contract_lifecycle_transition (
        contract_id uuid not null references contract (id),
        seq integer not null check (seq >= 0),
        state text not null check (state in ('TRIAL', 'ACTIVE', 'RENEWING', 'ARREARS', 'ENDED', 'ARCHIVED')),
        from_state text check (from_state in ('TRIAL', 'ACTIVE', 'RENEWING', 'ARREARS', 'ENDED', 'ARCHIVED')),
        at timestamptz not null,
        reason text not null,
        invoice_id uuid,
        alert_id uuid,
        hooks text[] not null default '{}',
        recorded_at timestamptz not null default now(),
        primary key (contract_id, seq)
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table contract_lifecycle_transition;');
  }
}
