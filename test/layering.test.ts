import { ROOT } from '../stack/config.js';
import type { NotificationStart } from '../activities/outbound-activities.js';
import type { NotificationWorkflowInput } from '../workflows/notification.js';
import { apiImportingWorkflows, importsIntoApi, importCycles, importSpecifiers, readLayers, routeExports, temporalOutsideOperations } from './layering.js';

/**
 * The layering of operations/README.md, checked on the source as it stands: each failure names
 * the file and the import (or line) that breaks a rule.
 */
describe('layering: who may import and call whom', () => {
  const files = readLayers(ROOT);
  const fail = (problems: string[]) => { if (problems.length) throw new Error(`${problems.length} layering problem(s):\n${problems.join('\n')}`); };

  test('the source files are read and their imports parsed', () => {
    expect(files.some((f) => f.path === 'api/routes/contracts.ts')).toBe(true);
    expect(files.some((f) => f.path === 'operations/workflow-client.ts')).toBe(true);
    expect(importSpecifiers(`import type { A } from './a.js';\nimport {\n  b,\n  c,\n} from "../b.js";\nexport { d } from './d.js';\nimport './e.js';\nconst f = await import('./f.js');\n// import { g } from './g.js';`))
      .toEqual(['./a.js', '../b.js', './d.js', './e.js', './f.js']);
  });

  test('only api/ imports from api/: no activity, operation or db/ file does', () => fail(importsIntoApi(ROOT, files)));

  test('api/ imports nothing from workflows/ or activities/', () => fail(apiImportingWorkflows(ROOT, files)));

  test('api/ and db/ neither import @temporalio/* nor start, signal or update workflows: operations/ does', () => fail(temporalOutsideOperations(files)));

  test('a route file in api/routes/ exports only its router factory', () => fail(routeExports(files)));

  test('the outbound activity starts notification workflows with their input (the type is spelled on both sides: no circle)', () => {
    // Fails to compile when the two drift apart.
    const agree: [Same<NotificationStart, NotificationWorkflowInput>, Same<NotificationWorkflowInput, NotificationStart>] = [true, true];
    expect(agree).toEqual([true, true]);
  });

  test('no import circle among api/, activities/, workflows/ and operations/ (type-only imports included)', () => fail(importCycles(ROOT, files)));
});

/** True only when A is assignable to B (a mismatch makes the annotated `true` fail to compile). */
type Same<A, B> = [A] extends [B] ? true : false;
