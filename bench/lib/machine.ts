import { readFileSync } from 'node:fs';
import os from 'node:os';

/** Where and when a benchmark ran: printed with every result so that figures can be compared. */
export interface Machine {
  date: string;
  node: string;
  cpu: string;
  cores: number;
  os: string;
}

export function describeMachine(now = new Date()): Machine {
  return {
    date: now.toISOString(),
    node: process.version,
    cpu: cpuModel(),
    cores: os.availableParallelism(),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
  };
}

function cpuModel(): string {
  try {
    const match = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'));
    if (match?.[1] !== undefined) return match[1].trim();
  } catch {
    /* not Linux: fall back to what Node reports */
  }
  return os.cpus()[0]?.model ?? 'unknown';
}
