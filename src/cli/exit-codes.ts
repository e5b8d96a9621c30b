import type { Run } from '../spec/index.ts';

/**
 * What `vmesh` exits with. A run that exited by itself passes its own exit code through; the other
 * endings get the codes shells already use for them (124 as timeout(1), 137 as a SIGKILL, 130 as ^C).
 */
export const EXIT = {
  ok: 0,
  /** The run failed without an exit code of its own (a trap, a throw, a driver fault). */
  runFailed: 1,
  /** The command line or the request was wrong (the message names the field). */
  usage: 2,
  /** No node answers at the address (not running, or wrong --api). */
  unreachable: 3,
  /** The run or object named does not exist. */
  notFound: 4,
  /** The node refused the request for another reason (capacity, queue full, conflict). */
  refused: 5,
  lost: 69,
  timeout: 124,
  cancelled: 130,
  oom: 137,
} as const;

export function exitCodeOf(run: Run): number {
  switch (run.state) {
    case 'succeeded':
      return EXIT.ok;
    case 'failed': {
      const code = run.result?.exitCode;
      return code !== null && code !== undefined && code > 0 && code < 256 ? code : EXIT.runFailed;
    }
    case 'timeout':
      return EXIT.timeout;
    case 'oom':
      return EXIT.oom;
    case 'cancelled':
      return EXIT.cancelled;
    case 'lost':
      return EXIT.lost;
    default:
      return EXIT.ok; // still live: --detach
  }
}
