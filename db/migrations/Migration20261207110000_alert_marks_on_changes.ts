import { Migration } from '@mikro-orm/migrations';

/**
 * A contract or a commit/credit that changes (created, edited, amended, archived, rolled over) marks
 * its customer for alert evaluation — a top-up can take a balance alert out of alarm — and tells
 * the API replicas the customer's entitlements may have changed (rate card, arrears policy). A
 * trigger, so every path that writes these rows is covered, in the writer's own transaction.
 */
export class Migration20261207110000_alert_marks_on_changes extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create function accrue_customer_terms_changed() returns trigger language plpgsql as $$
      begin
        if exists (select 1 from alert where status = 'enabled') then
          insert into alert_dirty (customer_id) values (new.customer_id);
          perform pg_notify('accrue_outbound', '');
        end if;
        perform pg_notify('accrue_entitlements', new.customer_id::text);
        return null;
      end $$;
      create trigger contract_terms_changed after insert or update on contract
        for each row execute function accrue_customer_terms_changed();
      create trigger balance_grant_terms_changed after insert or update on balance_grant
        for each row execute function accrue_customer_terms_changed();
    `);
  }

  override async down(): Promise<void> {
    this.addSql(`drop trigger balance_grant_terms_changed on balance_grant; drop trigger contract_terms_changed on contract;
      drop function accrue_customer_terms_changed();`);
  }
}
