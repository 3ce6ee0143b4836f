import { MikroORM, defineConfig } from '@mikro-orm/postgresql';
import { Migrator } from '@mikro-orm/migrations';
import { entities } from './entities.js';
import { migrationsList } from './migrations/index.js';

export type Orm = MikroORM;

export function ormConfig(databaseUrl: string, opts: { poolMax?: number } = {}) {
  return defineConfig({
    clientUrl: databaseUrl,
    entities,
    extensions: [Migrator],
    migrations: { migrationsList, transactional: true, allOrNothing: true, snapshot: false, silent: true, tableName: 'accrue_migrations' },
    pool: { min: 0, max: opts.poolMax ?? 10 },
    debug: process.env.ACCRUE_SQL_DEBUG === '1',
    // Timestamps are timestamptz and the connection speaks UTC, whatever the host's zone.
    timezone: '+00:00',
    forceUtcTimezone: true,
    allowGlobalContext: false,
  });
}

export async function openOrm(databaseUrl: string, opts: { poolMax?: number } = {}): Promise<MikroORM> {
  return MikroORM.init(ormConfig(databaseUrl, opts));
}

/** Applies every checked-in migration not yet applied, in one transaction. */
export async function migrate(orm: MikroORM): Promise<string[]> {
  const applied = await orm.migrator.up();
  return applied.map((m) => m.name);
}
