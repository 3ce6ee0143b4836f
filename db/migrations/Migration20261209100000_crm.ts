import { Migration } from '@mikro-orm/migrations';

/**
 * HubSpot. `crm_company` links a customer to its HubSpot company (one each way);
 * `crm_deal` a closed-won deal to the contract it created; `crm_push` keeps what was last written
 * to each HubSpot object, so a sync writes only what changed; `crm_task` the tasks made for a
 * deal's owner, one per lifecycle transition that asks for one; `crm_note` the notes left on
 * deals Accrue could not turn into contracts, one per distinct problem.
 */
export class Migration20261209100000_crm extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table crm_company (
        customer_id uuid primary key references customer (id),
        company_id text not null unique,
        created_at timestamptz not null default now()
      );
      create table crm_deal (
        deal_id text primary key,
        customer_id uuid not null references customer (id),
        contract_id uuid not null unique references contract (id),
        company_id text not null,
        owner_id text,
        created_at timestamptz not null default now()
      );
      create index crm_deal_customer on crm_deal (customer_id);
      create table crm_push (
        object_type text not null check (object_type in ('companies', 'deals')),
        object_id text not null,
        properties jsonb not null,
        pushed_at timestamptz not null default now(),
        full_pushed_at timestamptz not null default now(),
        primary key (object_type, object_id)
      );
      create table crm_task (
        contract_id uuid not null references contract (id),
        key text not null,
        deal_id text not null,
        kind text not null,
        task_id text,
        created_at timestamptz not null default now(),
        primary key (contract_id, key)
      );
      create table crm_note (
        deal_id text not null,
        marker text not null,
        note_id text,
        created_at timestamptz not null default now(),
        primary key (deal_id, marker)
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table crm_note; drop table crm_task; drop table crm_push; drop table crm_deal; drop table crm_company;');
  }
}
