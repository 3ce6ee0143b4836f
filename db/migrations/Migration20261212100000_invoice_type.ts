import { Migration } from '@mikro-orm/migrations';

/**
 * Metronome's invoice type: USAGE for a contract period's invoice (and the late-usage invoice at a
 * contract's end), SCHEDULED for a commit billed on its own invoice when it is granted (an
 * auto-recharge or spend-threshold commit whose payment gate is NONE).
 */
export class Migration20261212100000_invoice_type extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table invoice add column type text not null default 'USAGE' check (type in ('USAGE', 'SCHEDULED'));`);
  }

  override async down(): Promise<void> {
    this.addSql('alter table invoice drop column type;');
  }
}
