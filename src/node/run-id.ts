import { randomBytes } from 'node:crypto';

/** Time-ordered, unguessable run ids: `r` + 9 base36 chars of milliseconds + 12 hex chars of randomness. */
export function newRunId(now = Date.now()): string {
  return `r${now.toString(36).padStart(9, '0')}${randomBytes(6).toString('hex')}`;
}
