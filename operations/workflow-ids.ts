/**
 * Workflow and schedule ids the API shows in its answers (a contract's Temporal UI link, a usage
 * collector's `schedule_id`). Their one definition stays in workflows/search-attributes.ts; the API
 * reads them here, as it reaches everything else of Temporal, through operations/.
 */
export { contractWorkflowId, usageCollectorScheduleId } from '../workflows/search-attributes.js';
