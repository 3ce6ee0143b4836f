import { Migration } from '@mikro-orm/migrations';

/**
 * Payment-gated commits (`commits[].payment_gate_config.payment_gate_type: STRIPE` on contract
 * create): the commit is kept here, not in balance_grant, until its Stripe invoice is paid; then
 * `commit-payment/<grant id>` writes the grant (same id) and marks the row GRANTED.
 */
export class Migration20261208120000_gated_commits extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table gated_commit (
        grant_id uuid primary key,
        contract_id uuid not null references contract (id),
        customer_id uuid not null references customer (id),
        amount numeric not null check (amount > 0),
        grant_spec jsonb not null,
        status text not null check (status in ('PENDING', 'GRANTED', 'FAILED')),
        external_invoice_id text,
        failure text,
        workflow_started_at timestamptz,
        created_at timestamptz not null default now(),
        updated_at timestamptz not null default now()
      );
      create index gated_commit_unstarted on gated_commit (created_at) where workflow_started_at is null;
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table gated_commit;');
  }
}
