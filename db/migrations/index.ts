import { Migration20261121000000_foundation } from './Migration20261121000000_foundation.js';
import { Migration20261121010000_rating } from './Migration20261121010000_rating.js';
import { Migration20261121020000_customer_event_key } from './Migration20261121020000_customer_event_key.js';
import { Migration20261121030000_drop_event_lookup_index } from './Migration20261121030000_drop_event_lookup_index.js';
import { Migration20261121040000_usage_collector } from './Migration20261121040000_usage_collector.js';
import { Migration20261121050000_pricing_contracts } from './Migration20261121050000_pricing_contracts.js';
import { Migration20261121060000_usage_daily } from './Migration20261121060000_usage_daily.js';
import { Migration20261121070000_invoice_void } from './Migration20261121070000_invoice_void.js';
import { Migration20261121080000_grant_amendment } from './Migration20261121080000_grant_amendment.js';
import { Migration20261121090000_rollover } from './Migration20261121090000_rollover.js';
import { Migration20261121100000_usage_rated_at } from './Migration20261121100000_usage_rated_at.js';
import { Migration20261202110000_event_quarantine } from './Migration20261202110000_event_quarantine.js';
import { Migration20261202111000_duplicate_payload_hash } from './Migration20261202111000_duplicate_payload_hash.js';
import { Migration20261202130000_invoice_email } from './Migration20261202130000_invoice_email.js';
import { Migration20261202140000_contract_lifecycle } from './Migration20261202140000_contract_lifecycle.js';
import { Migration20261206100000_payments_and_notices } from './Migration20261206100000_payments_and_notices.js';
import { Migration20261206110000_approval_reminder } from './Migration20261206110000_approval_reminder.js';
import { Migration20261207100000_alerts_and_webhooks } from './Migration20261207100000_alerts_and_webhooks.js';
import { Migration20261207110000_alert_marks_on_changes } from './Migration20261207110000_alert_marks_on_changes.js';
import { Migration20261208100000_stripe } from './Migration20261208100000_stripe.js';
import { Migration20261208110000_recharge } from './Migration20261208110000_recharge.js';
import { Migration20261208120000_gated_commits } from './Migration20261208120000_gated_commits.js';

/** Checked-in migrations, in order. Listed explicitly so the compiled build needs no file globbing. */
export const migrationsList = [
  { name: 'Migration20261121000000_foundation', class: Migration20261121000000_foundation },
  { name: 'Migration20261121010000_rating', class: Migration20261121010000_rating },
  { name: 'Migration20261121020000_customer_event_key', class: Migration20261121020000_customer_event_key },
  { name: 'Migration20261121030000_drop_event_lookup_index', class: Migration20261121030000_drop_event_lookup_index },
  { name: 'Migration20261121040000_usage_collector', class: Migration20261121040000_usage_collector },
  { name: 'Migration20261121050000_pricing_contracts', class: Migration20261121050000_pricing_contracts },
  { name: 'Migration20261121060000_usage_daily', class: Migration20261121060000_usage_daily },
  { name: 'Migration20261121070000_invoice_void', class: Migration20261121070000_invoice_void },
  { name: 'Migration20261121080000_grant_amendment', class: Migration20261121080000_grant_amendment },
  { name: 'Migration20261121090000_rollover', class: Migration20261121090000_rollover },
  { name: 'Migration20261121100000_usage_rated_at', class: Migration20261121100000_usage_rated_at },
  { name: 'Migration20261202110000_event_quarantine', class: Migration20261202110000_event_quarantine },
  { name: 'Migration20261202111000_duplicate_payload_hash', class: Migration20261202111000_duplicate_payload_hash },
  { name: 'Migration20261202130000_invoice_email', class: Migration20261202130000_invoice_email },
  { name: 'Migration20261202140000_contract_lifecycle', class: Migration20261202140000_contract_lifecycle },
  { name: 'Migration20261206100000_payments_and_notices', class: Migration20261206100000_payments_and_notices },
  { name: 'Migration20261206110000_approval_reminder', class: Migration20261206110000_approval_reminder },
  { name: 'Migration20261207100000_alerts_and_webhooks', class: Migration20261207100000_alerts_and_webhooks },
  { name: 'Migration20261207110000_alert_marks_on_changes', class: Migration20261207110000_alert_marks_on_changes },
  { name: 'Migration20261208100000_stripe', class: Migration20261208100000_stripe },
  { name: 'Migration20261208110000_recharge', class: Migration20261208110000_recharge },
  { name: 'Migration20261208120000_gated_commits', class: Migration20261208120000_gated_commits },
];
