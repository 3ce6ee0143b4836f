import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Is every committed change to the workflow code covered by a recorded history? A history file's
 * label (`<workflowType>-<scenario>-<label>.json`) names the commit whose workflow code made it; a
 * commit that changed `workflows/` (tests and docs aside) is covered when it is that commit or an
 * ancestor of it. So a change passes once histories are recorded from it or from any later commit
 * of the same line, and after merging, each branch's changes are covered by its own recording.
 * Merge commits are left out (their workflow code is both sides', each covered on its own side).
 * Labels that are not commits of this repository (a free ACCRUE_HISTORY_LABEL) cover nothing.
 */
export const WORKFLOW_CODE = [':(glob)workflows/**/*.ts', ':(glob,exclude)workflows/**/*.test.ts'];

export interface UnrecordedChange {
  commit: string;
  subject: string;
  files: string[];
}

/** Git's history is not there to decide (no git, not a repository, or a shallow clone). */
export class GitHistoryUnavailable extends Error {}

export function unrecordedWorkflowChanges(root: string, historiesDir = join(root, 'test', 'histories')): UnrecordedChange[] {
  const git = (...args: string[]) => execFileSync('git', args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
  let shallow: string;
  try {
    git('rev-parse', '--verify', 'HEAD');
    shallow = git('rev-parse', '--is-shallow-repository');
  } catch (err) {
    throw new GitHistoryUnavailable(`git history is unavailable in ${root} (${firstLine(err)}): whether every change to workflows/ has a recorded history cannot be checked; run the tests in a git clone`);
  }
  if (shallow === 'true') {
    throw new GitHistoryUnavailable(`${root} is a shallow clone: whether every change to workflows/ has a recorded history cannot be checked without the history (git fetch --unshallow, or clone without --depth)`);
  }
  const labels = new Set(existsSync(historiesDir)
    ? readdirSync(historiesDir).map((f) => /-([0-9a-f]{7,40})\.json$/.exec(f)?.[1]).filter((l): l is string => l !== undefined)
    : []);
  const recordedAt: string[] = [];
  for (const label of labels) {
    try {
      recordedAt.push(git('rev-parse', '--verify', '--quiet', `${label}^{commit}`));
    } catch {
      // not a commit here (e.g. recorded on a branch that was rebased away): covers nothing
    }
  }
  const out = git('log', '--no-merges', '--format=%x00%H%x01%s', '--name-only', 'HEAD', ...(recordedAt.length ? ['--not', ...recordedAt] : []), '--', ...WORKFLOW_CODE);
  return out.split('\0').filter((c) => c.trim()).map((chunk) => {
    const [head = '', ...files] = chunk.split('\n');
    const [commit = '', subject = ''] = head.split('\x01');
    return { commit, subject, files: files.map((f) => f.trim()).filter((f) => f.startsWith('workflows/') && !f.endsWith('.test.ts')) };
  });
}

/** What to do about them, for the failing check's message. */
export function describeUnrecorded(changes: UnrecordedChange[]): string {
  const list = changes.map((c) => `  ${c.commit.slice(0, 8)} ${c.subject.slice(0, 100)}\n    ${c.files.join(', ')}`).join('\n');
  return `workflows/ changed in ${changes.length} commit(s) that no recorded history in test/histories/ was made from (or after):\n${list}\n`
    + 'Record the workflow code as it is now: with workflows/ and billing/ committed, run `npm run record:histories` and commit the new '
    + 'test/histories/*.json files (labelled with that commit). Add a scenario to test/record-histories.ts for a new path; never '
    + 'overwrite an old history; a change that alters the commands of running workflows needs patched() (test/histories/README.md).';
}

const firstLine = (err: unknown) => String((err as { stderr?: string }).stderr || (err as Error).message || err).trim().split('\n')[0];
