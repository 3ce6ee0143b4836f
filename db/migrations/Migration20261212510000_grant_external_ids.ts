import { Migration } from '@mikro-orm/migrations';

/** A commit's or credit's ids in the customer's ERP and CRM (`netsuite_sales_order_id`, `salesforce_opportunity_id`), kept and returned. */
export class Migration20261212510000_grant_external_ids extends Migration {
  override async up(): Promise<void> {
    this.addSql('alter table balance_grant add column external_ids jsonb;');
  }

  override async down(): Promise<void> {
    this.addSql('alter table balance_grant drop column external_ids;');
  }
}
