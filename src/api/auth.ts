import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { UnauthorizedError } from '../spec/errors.ts';

export function tokenPath(home: string): string {
  return path.join(home, 'token');
}

/** The node's API bearer token: created at first start (random, file mode 0600), then reused. */
export function loadOrCreateToken(home: string): string {
  const file = tokenPath(home);
  if (existsSync(file)) {
    const mode = statSync(file).mode & 0o777;
    if (mode & 0o077) chmodSync(file, 0o600); // never leave it readable by others
    const token = readFileSync(file, 'utf8').trim();
    if (token.length >= 32) return token;
  }
  const token = randomBytes(32).toString('base64url');
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  return token;
}

/** Checks an Authorization header against the token in constant time. */
export function checkBearer(header: string | undefined, token: string): void {
  if (header === undefined) throw new UnauthorizedError('missing bearer token: send "Authorization: Bearer <token>" (the token is in $VMESH_HOME/token)');
  const m = /^Bearer\s+(\S+)$/i.exec(header);
  if (m === null) throw new UnauthorizedError('malformed Authorization header: expected "Bearer <token>"');
  const a = createHash('sha256').update(m[1]!).digest();
  const b = createHash('sha256').update(token).digest();
  if (!timingSafeEqual(a, b)) throw new UnauthorizedError('wrong bearer token');
}
