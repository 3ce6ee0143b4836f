import { Migration } from '@mikro-orm/migrations';

/**
 * The web console: `console_session` holds finance logins (by the hash of the session
 * token, with the scope of the token that logged in and when it expires); `console_secret` the
 * one key that signs customer dashboard URLs, made once, so every API replica checks the same.
 */
export class Migration20261210100000_console extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
      create table console_session (
        token_hash text primary key,
        scope text not null,
        -- The hash of the token that logged in (null: the operator's ACCRUE_ADMIN_TOKEN): revoking it ends its sessions.
        source_token_hash text,
        created_at timestamptz not null default now(),
        expires_at timestamptz not null
      );
      create index console_session_expiry on console_session (expires_at);
      create table console_secret (
        id int primary key check (id = 1),
        secret text not null,
        created_at timestamptz not null default now()
      );
    `);
  }

  override async down(): Promise<void> {
    this.addSql('drop table console_secret; drop table console_session;');
  }
}
