import { Migration } from '@mikro-orm/migrations';

/**
 * A duplicate submission's payload hash, so /v1/events/search can tell a retry (same payload)
 * from a conflicting reuse of a transaction_id (different payload, silently not counted).
 * Only duplicates are hashed at ingest; the stored event's hash is computed when searched.
 */
export class Migration20261202111000_duplicate_payload_hash extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      -- customer_id, event_type, the instant (epoch, whatever the session's time zone) and the
      -- properties as jsonb renders them (keys sorted, whitespace normalized).
      create function event_payload_hash(customer_id text, event_type text, ts timestamptz, properties jsonb) returns uuid
        language sql immutable parallel safe
        as $$ select md5(jsonb_build_array(customer_id, event_type, extract(epoch from ts)::text, coalesce(properties, '{}'::jsonb))::text)::uuid $$;
      alter table event_duplicate add column payload_hash uuid;
    `);
  }

  override async down(): Promise<void> {
    this.addSql('alter table event_duplicate drop column payload_hash; drop function event_payload_hash(text, text, timestamptz, jsonb);');
  }
}
