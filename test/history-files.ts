import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import type { History } from '@temporalio/common/lib/proto-utils.js';
import { ROOT } from '../stack/config.js';

/**
 * Recorded workflow histories (`test/histories/<workflowType>-<scenario>-<label>.json`), in the
 * JSON form the Temporal CLI and UI export (`historyToJSON`): `Worker.runReplayHistories` reads it
 * back as it is. A file is never overwritten — running workflows of the build that made it must
 * keep replaying (test/histories/README.md).
 */
export const HISTORIES_DIR = join(ROOT, 'test', 'histories');

/**
 * The proto JSON conversion of @temporalio/common's `historyToJSON` / `historyFromJSON`, done
 * with the protobufjs that @temporalio/proto itself uses. Those two SDK functions (and so
 * `Worker.runReplayHistories` given JSON) fail here with "type must be a Type": npm nests a copy
 * of protobufjs 8 under each @temporalio package (grpc's proto-loader holds protobufjs 7 at the
 * root), and common's copy does not recognize the types proto's copy built. Resolving protobufjs
 * from @temporalio/proto works however npm lays the packages out.
 */
const requireHere = createRequire(import.meta.url);
const protojson = createRequire(requireHere.resolve('@temporalio/proto'))('protobufjs/ext/protojson') as {
  toJson(type: unknown, message: unknown): unknown;
  fromJson(type: unknown, json: unknown, options?: { ignoreUnknownFields?: boolean }): unknown;
};
const proto = requireHere('@temporalio/proto') as { temporal: { api: { history: { v1: { History: { fromObject(o: unknown): unknown } } } } } };
const { patchProtobufRoot } = requireHere('@temporalio/proto/lib/patch-protobuf-root') as { patchProtobufRoot(root: unknown): { lookupType(name: string): unknown } };
const historyType = patchProtobufRoot(proto).lookupType('temporal.api.history.v1.History');

export function historyToJson(history: History): unknown {
  return protojson.toJson(historyType, proto.temporal.api.history.v1.History.fromObject(history));
}

/** A History object (Long ids), which `Worker.runReplayHistories` replays without converting it. */
export function historyFromJson(json: unknown): History {
  const history = protojson.fromJson(historyType, json, { ignoreUnknownFields: true }) as History | null;
  if (!history?.events?.length) throw new TypeError('not a workflow history');
  return history;
}

export interface HistoryFile {
  file: string;
  workflowType: string;
  history: History;
}

export function readHistoryFiles(dir = HISTORIES_DIR): HistoryFile[] {
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((f) => f.endsWith('.json')).sort().map((file) => {
    const history = historyFromJson(JSON.parse(readFileSync(join(dir, file), 'utf8')));
    const workflowType = history.events?.[0]?.workflowExecutionStartedEventAttributes?.workflowType?.name;
    if (!workflowType) throw new Error(`${file}: not a workflow history (its first event is not WorkflowExecutionStarted)`);
    return { file, workflowType, history };
  });
}

/** Writes `<workflowType>-<scenario>-<label>.json`; refuses to replace an existing file. */
export function writeHistoryFile(workflowType: string, scenario: string, label: string, history: History): string {
  if (!/^[a-z0-9][a-z0-9.-]*$/i.test(scenario) || !/^[a-z0-9][a-z0-9.-]*$/i.test(label)) throw new Error(`scenario and label must be plain names: ${scenario}, ${label}`);
  mkdirSync(HISTORIES_DIR, { recursive: true });
  const file = `${workflowType}-${scenario}-${label}.json`;
  const path = join(HISTORIES_DIR, file);
  if (existsSync(path)) {
    throw new Error(`${file} exists: histories of a build are never overwritten (running workflows may need them). Record with another ACCRUE_HISTORY_LABEL.`);
  }
  // Pretty-printed so a review diff shows the events.
  writeFileSync(path, `${JSON.stringify(historyToJson(history), null, 2)}\n`);
  return file;
}
