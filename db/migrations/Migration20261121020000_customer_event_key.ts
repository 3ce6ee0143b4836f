import { Migration } from '@mikro-orm/migrations';

/**
 * customer_event_key becomes a table (it was a view over customer ∪ customer_ingest_alias) with a
 * primary key, kept by triggers: the rater resolves every event's customer through it, and the
 * view's `id::text` side had no index to look up.
 */
export class Migration20261121020000_customer_event_key extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      drop view customer_event_key;
      create table customer_event_key (
        key text primary key,
        customer_id uuid not null references customer(id)
      );
      insert into customer_event_key (key, customer_id)
        select id::text, id from customer union all select alias, customer_id from customer_ingest_alias;

      create function customer_event_key_from_customer() returns trigger language plpgsql as $$
      begin
        insert into customer_event_key (key, customer_id) values (new.id::text, new.id);
        return new;
      end $$;
      create trigger customer_event_key_from_customer after insert on customer
        for each row execute function customer_event_key_from_customer();

      create function customer_event_key_from_alias() returns trigger language plpgsql as $$
      begin
        if tg_op in ('DELETE', 'UPDATE') then delete from customer_event_key where key = old.alias; end if;
        if tg_op in ('INSERT', 'UPDATE') then insert into customer_event_key (key, customer_id) values (new.alias, new.customer_id); end if;
        return null;
      end $$;
      create trigger customer_event_key_from_alias after insert or update or delete on customer_ingest_alias
        for each row execute function customer_event_key_from_alias();
    `);
  }

  override async down(): Promise<void> {
    this.addSql(`
      drop trigger customer_event_key_from_alias on customer_ingest_alias;
      drop trigger customer_event_key_from_customer on customer;
      drop function customer_event_key_from_alias();
      drop function customer_event_key_from_customer();
      drop table customer_event_key;
      create view customer_event_key as
        select id::text as key, id as customer_id from customer
        union all
        select alias, customer_id from customer_ingest_alias;
    `);
  }
}
