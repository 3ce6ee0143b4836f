import { Migration } from '@mikro-orm/migrations';

/**
 * Void and regenerate: a FINALIZED invoice may become VOID (its lines and total never change), a
 * VOID invoice never changes again, and one live (non-void) invoice per contract period.
 */
export class Migration20261121070000_invoice_void extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      alter table invoice add column voided_at timestamptz,
                          add column regenerated_from_invoice_id uuid references invoice(id);
      alter table invoice drop constraint invoice_contract_id_period_start_key;
      create unique index invoice_live_period_idx on invoice (contract_id, period_start) where status <> 'VOID';
      create unique index invoice_regenerated_from_idx on invoice (regenerated_from_invoice_id) where regenerated_from_invoice_id is not null;

      create or replace function invoice_finalized_is_immutable() returns trigger language plpgsql as $$
      begin
        if old.status in ('FINALIZED', 'VOID') and (
             new.line_items is distinct from old.line_items or new.total is distinct from old.total
          or new.period_start is distinct from old.period_start or new.period_end is distinct from old.period_end
          or new.finalized_at is distinct from old.finalized_at) then
          raise exception 'invoice % is % and cannot change (finalized and void invoices are immutable)', old.id, old.status using errcode = 'check_violation';
        end if;
        if (old.status = 'FINALIZED' and new.status not in ('FINALIZED', 'VOID')) or (old.status = 'VOID' and new.status <> 'VOID') then
          raise exception 'invoice % cannot go from % to %', old.id, old.status, new.status using errcode = 'check_violation';
        end if;
        return new;
      end $$;
    `);
  }

  override async down(): Promise<void> {
    this.addSql(`
      drop index if exists invoice_live_period_idx, invoice_regenerated_from_idx;
      alter table invoice drop column if exists voided_at, drop column if exists regenerated_from_invoice_id;
    `);
  }
}
