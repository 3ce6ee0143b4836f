import { Migration } from '@mikro-orm/migrations';

/**
 * Rollover on contract transitions: a commit or credit of the old contract records what rolled
 * over (`rolled_over`, per segment), and the new one where it came from (`rolled_over_from`).
 */
export class Migration20261121090000_rollover extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      alter table balance_grant add column rolled_over jsonb, add column rolled_over_from jsonb;
      create index contract_transition_from_idx on contract ((terms -> 'transition' ->> 'from_contract_id'));
    `);
  }

  override async down(): Promise<void> {
    this.addSql('alter table balance_grant drop column if exists rolled_over, drop column if exists rolled_over_from; drop index if exists contract_transition_from_idx;');
  }
}
