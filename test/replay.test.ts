import { join } from 'node:path';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundle } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import { ROOT } from '../stack/config.js';
import * as workflows from '../workflows/index.js';
import { readHistoryFiles } from './history-files.js';

/**
 * Every recorded history in test/histories/ (test/histories/README.md) replays against the
 * workflow code this build ships (dist/workflows/index.js, as the worker bundles it): a change
 * that would break a running contract, invoice close, rater, backfill or collector fails here,
 * naming the file. Replay needs no server: the SDK's replay worker feeds the history to the code.
 */
const histories = readHistoryFiles();

describe('recorded workflow histories replay against the current workflow code', () => {
  let current: WorkflowBundle;

  beforeAll(async () => {
    // The deliberate violation below is logged by the SDK's core as a WARN: keep the suite's output clean.
    Runtime.install({ logger: new DefaultLogger('ERROR'), telemetryOptions: { logging: { filter: { core: 'ERROR', other: 'ERROR' }, forward: {} } } });
    current = await bundleWorkflowCode({ workflowsPath: join(ROOT, 'dist', 'workflows', 'index.js'), logger: new DefaultLogger('ERROR') });
  });

  test('every workflow type the worker registers has recorded histories', () => {
    const recorded = new Set(histories.map((h) => h.workflowType));
    expect(Object.keys(workflows).filter((name) => !recorded.has(name))).toEqual([]);
  });

  test.each(histories.map((h) => [h.file, h] as const))('%s replays without non-determinism', async (file, h) => {
    // Throws DeterminismViolationError (or ReplayError) with the file name as the workflow id.
    await Worker.runReplayHistory({ workflowBundle: current, replayName: file }, h.history, file);
  });

  test('the check can fail: a recorded backfill does not replay against a changed backfill workflow', async () => {
    const backfill = histories.find((h) => h.workflowType === 'metricBackfillWorkflow');
    if (!backfill) throw new Error('no recorded metricBackfillWorkflow history');
    const changed = await bundleWorkflowCode({ workflowsPath: join(ROOT, 'test', 'replay-changed-workflows.ts'), logger: new DefaultLogger('ERROR') });
    const replay = Worker.runReplayHistory({ workflowBundle: changed, replayName: 'changed' }, backfill.history, backfill.file);
    await expect(replay).rejects.toThrow(DeterminismViolationError);
    await expect(replay).rejects.toThrow(/loadContractPlan|backfillMetric|nondetermin/i);
  });
});
