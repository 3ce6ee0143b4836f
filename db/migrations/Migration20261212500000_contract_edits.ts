import { Migration } from '@mikro-orm/migrations';

/**
 * `contract_edit`: v2 edits made with a `uniqueness_key` (unique across the account), with a hash of the request
 * and the edit's id, so the same request again answers the first result and another request with
 * the key is refused. `contract_tell`: contracts whose workflow must be told of a committed change
 * (queued in the change's transaction, cleared once told; the outbound loop tells what the API
 * could not, e.g. while Temporal was unreachable).
 */
export class Migration20261212500000_contract_edits extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table contract_edit (
        contract_id uuid not null references contract (id),
        uniqueness_key text not null,
        request_hash text not null,
        edit_id uuid not null,
        created_at timestamptz not null default now(),
        primary key (uniqueness_key)
      );
      create table contract_tell (
        contract_id uuid primary key references contract (id),
        token uuid not null,
        queued_at timestamptz not null default now()
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table contract_tell; drop table contract_edit;');
  }
}
