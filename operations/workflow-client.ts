import { Client, Connection } from '@temporalio/client';

/**
 * The one door from the API's side to Temporal. Operations start, signal, update and cancel
 * workflows through the `Client` passed in; the API and the database layer never import
 * @temporalio/client themselves (test/layering.test.ts holds them to it).
 *
 * This module imports nothing from workflows/: operations name a workflow by its registered name
 * and take its ids, search attributes and message definitions from the workflow modules that
 * import no activities (search-attributes.ts, contract-messages.ts) — or, for workflows no activity
 * reaches, from the workflow's own module — so no operation an activity calls closes an import
 * circle through the workflows that call that activity.
 */
export type { Client } from '@temporalio/client';
export { ScheduleOverlapPolicy, WorkflowIdReusePolicy, WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
export { ApplicationFailure, WorkflowExecutionAlreadyStartedError } from '@temporalio/common';

/** The API process's client: connects on first use, so the API starts while Temporal is down. */
export function connectWorkflowClient(address: string, namespace: string): Client {
  const connection = Connection.lazy({ address });
  return new Client({ connection, namespace });
}
