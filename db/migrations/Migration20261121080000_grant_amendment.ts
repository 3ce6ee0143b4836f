import { Migration } from '@mikro-orm/migrations';

/** Commits and credits added by an amendment or edit remember it (the contract's `amendments`). */
export class Migration20261121080000_grant_amendment extends Migration {
  override async up(): Promise<void> {
    this.addSql('alter table balance_grant add column amendment_id uuid;');
  }

  override async down(): Promise<void> {
    this.addSql('alter table balance_grant drop column if exists amendment_id;');
  }
}
