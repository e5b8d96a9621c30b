// Compliance cases for microVM drivers: shell commands run by the agent in the default vmesh guest.
import type { Workload } from '../../src/spec/index.ts';
import type { Case, ComplianceFixtures } from './compliance.ts';

/** A command for the default guest, as a compliance case. */
export const guestCase = (script: string, extra: Partial<Workload> = {}): Case => ({
  workload: { kind: 'microvm', source: { guest: 'default' }, command: ['sh', '-c', script], ...extra },
  code: new Uint8Array(0),
});

/** The compliance suite's fixtures, in the default guest. */
export async function guestFixtures(): Promise<ComplianceFixtures> {
  return {
    hello: { ...guestCase('echo hello from a microvm'), stdout: 'hello from a microvm\n' },
    stderr: { ...guestCase('echo oops >&2'), stderr: 'oops' },
    exitCode: { ...guestCase('exit 7'), exitCode: 7 },
    spin: guestCase('while :; do :; done'),
    memoryBomb: guestCase('a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done'),
    flood: guestCase('yes xxxxxxxxxxxxxxx | head -c 200000'),
    numbered: (n) => ({ ...guestCase(`echo vm ${n}`), stdout: `vm ${n}\n` }),
  };
}
